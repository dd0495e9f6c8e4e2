"""Corpora: label schemes, file-name parsers for each corpus, and ingest into the database.
"""
