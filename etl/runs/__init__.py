"""Runs: the batch and feature runners (paging, worker processes or a Dask cluster, progress),
batch discovery and the database claims that keep every call scored exactly once.
"""
