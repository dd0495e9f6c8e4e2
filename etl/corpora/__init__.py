"""Corpora: the emotion vocabulary, label schemes and negative emotions (``labels``), actor
demographics and age bands (``demographics``), file-name parsers for each corpus (``parsers``)
and ingest into the database (``ingest``).
"""
