"""PostgreSQL password verifiers computed on the client, so a clear password never reaches the
server (nor its statement log)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SCRAM_ITERATIONS = 4096


def scram_sha256(password: str, *, salt: bytes | None = None,
                 iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802/7677)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(hashlib.sha256(client_key).digest()).decode()}:{b64(server_key).decode()}")
