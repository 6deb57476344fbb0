"""API keys for the nodes' HTTP API: how they look, are made and are hashed.

A key is `API-` and 32 characters from A-Z and 0-9, drawn with `secrets`:
36**32, about 2**165 possible keys. It is shown once, when it is made; the
database keeps only its SHA-256.

Why a plain SHA-256 and not a slow password hash (bcrypt, scrypt, argon2):
those exist to make guessing a *low-entropy* secret (a password a person
chose) expensive. A 165-bit random key cannot be guessed however fast the
hash is, so a slow hash would only add latency to every request. A fast,
unsalted hash also lets a request find its key by an indexed lookup of the
hash, rather than trying every stored key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string

from .models import validate_name

KEY_PREFIX = "API-"
KEY_LENGTH = 32
KEY_ALPHABET = string.ascii_uppercase + string.digits
KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}[A-Z0-9]{{{KEY_LENGTH}}}$")


def generate_key() -> str:
    """A new random key: `API-` and 32 uppercase letters and digits."""
    return KEY_PREFIX + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


ROLE_HASH_PREFIX = "role:"


def hash_key(key: str) -> str:
    """What the database keeps instead of a key made since keys have roles
    (see the module docstring). The prefix keeps such keys unknown to older
    versions of octonodes sharing the database during a rolling upgrade:
    they would let any key do anything, so they refuse these keys instead."""
    return ROLE_HASH_PREFIX + legacy_hash(key)


def legacy_hash(key: str) -> str:
    """What the database kept for a key made before roles (now an admin key)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def well_formed(key: str) -> bool:
    """True if `key` looks like a key this module makes (checked before any lookup)."""
    return bool(KEY_PATTERN.match(key))


def validate_key_name(name: str) -> str:
    """A key's name: 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit."""
    return validate_name(name, "API key")
