"""Features: named, versioned feature specs, their extraction from audio, and their storage per clip.
"""
