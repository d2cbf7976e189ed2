"""Which parts of a backbone's config entry change its features, and the feature directory named after them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Window sizes, layers and V-V layers are absent on purpose: they are added to an existing store
# (see fsad.features.cache) instead of starting a new one; batch size and precision are run settings.
# storage_dtype changes the stored numbers (float16 rounds them), so each dtype has its own store.
SPEC_KEYS = ("arch", "pretrained", "image_size", "storage_dtype")


def canonical_spec(spec: dict[str, Any]) -> str:
    """The parts of a backbone spec that change features, as canonical JSON."""
    return json.dumps({k: spec[k] for k in SPEC_KEYS if spec.get(k) is not None}, sort_keys=True)


def backbone_key(name: str, spec: dict[str, Any]) -> str:
    """``{name}-{8 hex}``: a readable directory name that changes whenever the features would."""
    return f"{name}-{hashlib.sha256(canonical_spec(spec).encode()).hexdigest()[:8]}"
