"""ser-analytics: batch speech-emotion analytics backed by PostgreSQL."""

__version__ = "0.1.0"
