"""Deterministic random streams keyed by content, never by process state.

Every image is a pure function of (concept, index, seed): the stream is seeded from a SHA-256
digest of those values (Python's ``hash()`` is salted per process), and separate *purposes*
(layout vs. pixel texture) get separate streams so that the layout of an image does not depend
on its pixel size.
"""
from __future__ import annotations

import hashlib

import numpy as np


def stream(*parts: object) -> np.random.Generator:
    """A PCG64 generator seeded from the digest of ``parts`` (stringified, '|'-joined)."""
    key = "|".join(str(p) for p in parts).encode()
    digest = hashlib.sha256(key).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))
