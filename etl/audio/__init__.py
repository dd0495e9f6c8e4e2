"""Audio: decoding and resampling, filter banks and windows, DSP helpers, voice activity detection.
"""
