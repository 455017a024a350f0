"""Bearer secrets (``sk_live_...`` API keys, ``agt_...`` agent tokens): generation, checksum, hashing.

Format: prefix + 32 random base62 characters + a 6-character base62 CRC32 of the two. The checksum lets
secret scanners and our own rate limiter tell a plausible key from noise without a database lookup.
Only the SHA-256 of a token is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

ALPHABET = string.digits + string.ascii_letters
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
API_KEY_PREFIX = "sk_live_"
AGENT_TOKEN_PREFIX = "agt_"


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits))


def _checksum(prefix: str, body: str) -> str:
    return _base62(zlib.crc32(f"{prefix}{body}".encode()), CHECKSUM_LENGTH)


def generate(prefix: str) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return f"{prefix}{body}{_checksum(prefix, body)}"


def is_well_formed(token: str, prefix: str) -> bool:
    if not token.startswith(prefix) or len(token) != len(prefix) + RANDOM_LENGTH + CHECKSUM_LENGTH:
        return False
    body = token[len(prefix) : len(prefix) + RANDOM_LENGTH]
    given = token[len(prefix) + RANDOM_LENGTH :]
    if any(char not in ALPHABET for char in body):
        return False
    return hmac.compare_digest(given, _checksum(prefix, body))


@dataclass(frozen=True, slots=True)
class Bearer:
    """A well-formed secret seen in an Authorization header: its kind (prefix) and its SHA-256."""

    prefix: str
    hash: str


def recognise_bearer(authorization: str | None, prefixes: tuple[str, ...]) -> Bearer | None:
    """The well-formed secret of an ``Authorization: Bearer ...`` value, hashed once for every later use."""
    if not authorization or authorization[:7].lower() != "bearer ":
        return None
    secret = authorization[7:].strip()
    for prefix in prefixes:
        if is_well_formed(secret, prefix):
            return Bearer(prefix, hash_token(secret))
    return None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hashes_match(stored_hash: str, token: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_token(token))
