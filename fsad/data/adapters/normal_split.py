"""Deterministic train/test assignment of normal images for datasets that ship without a split.

The textile and ELPV packages give labelled images but no train/test split. The papers' protocol
needs training normals to draw few-shot references from and a disjoint test set, so each normal
image goes to ``train`` when a fixed hash of ``(dataset kind, image key)`` falls below
:data:`TRAIN_FRACTION`. The rule depends neither on file order nor on the config seed, so every
run, machine and config sees the same split; anomalous images are always ``test``.
"""

from __future__ import annotations

from fsad.seeding import derive_seed

TRAIN_FRACTION = 0.5
_SPLIT_SALT = 0  # part of the rule: changing it reshuffles every split built on it


def normal_split(kind: str, key: str, train_fraction: float = TRAIN_FRACTION) -> str:
    """``'train'`` or ``'test'`` for the normal image ``key`` (a stable name such as a file stem) of ``kind``."""
    return "train" if derive_seed(_SPLIT_SALT, "normal-split", kind, key) / 2**32 < train_fraction else "test"
