"""Deterministic seeds derived from ``(config seed, dataset, category, setting, run)``."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    """Return a 32-bit seed that depends only on ``seed`` and ``parts`` (stable across processes)."""
    key = "/".join([str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
