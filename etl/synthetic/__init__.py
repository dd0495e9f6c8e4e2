"""Synthetic data: deterministic emotional speech, generated stereo calls, the demo corpus, small
corpus fixtures and database history for tests, the demo and the benchmarks.
"""
