"""Which parts of a backbone's config entry change its numbers, and the feature directory named after them.

A backbone entry mixes three kinds of keys:

* the *network* (:data:`NETWORK_KEYS`): the library that builds it (open_clip or timm), architecture, weights, input
  size, PromptAD's resize, the position-embedding resize and the image embedding (``ln_post`` or not; the last three
  open_clip only), the activation the weights declare (open_clip only, :mod:`fsad.backbones.activation`), compute
  precision and storage dtype. They decide every number a feature,
  fit or score job computes from the backbone, so they are the only backbone keys those jobs receive as params
  and the feature directory is named by their hash (:func:`backbone_key`);
* what a store holds (window sizes, layers, V-V layers): added to an existing store, never a new one; each
  features job receives the union its readers declare (rules/common.smk), score and fit jobs none of them;
* run settings (:data:`RUN_SETTINGS`: batch size, DataLoader workers): how fast, not what. No job receives them as
  params, so changing them reruns nothing; jobs read them from the config (:func:`run_settings`). On the CPU a
  batch size can change the last bits of a float32 feature (matrix kernels block by batch); float16 storage
  hides most such differences, and features are reproducible at a fixed batch size, not across batch sizes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fsad.backbones.activation import declared_quick_gelu

NETWORK_KEYS = (
    "library", "arch", "pretrained", "image_size", "resize", "pos_embed_resize", "image_embedding", "quick_gelu", "precision", "storage_dtype"
)
# Network keys whose default value is left out of the key, so the keys of backbones that do not set them stay what they
# were before the option existed: PromptAD's ``resize``, and the two options that reproduce AnomalyCLIP's and FAPrompt's
# public code (position embeddings resized bilinearly, the image embedding without ``ln_post``).
DEFAULT_LEFT_OUT = {"resize": "direct", "pos_embed_resize": "bicubic", "image_embedding": "ln_post"}
RUN_SETTINGS = {"batch_size": 8, "workers": None}
# The libraries a backbone entry's ``library`` names; entries without one are open_clip's (config/schema.yaml).
OPEN_CLIP, TIMM = "open_clip", "timm"
LIBRARIES = (OPEN_CLIP, TIMM)


def backbone_library(spec: dict[str, Any]) -> str:
    """The library that builds a backbone entry's network: ``open_clip`` (CLIP, with a text tower) or ``timm``."""
    library = spec.get("library") or OPEN_CLIP
    if library not in LIBRARIES:
        raise ValueError(f"backbone {spec.get('arch')}: library {library!r} is not one of {list(LIBRARIES)}; fix it in the config")
    return library


def network_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The keys of a backbone entry that decide its numbers, with ``quick_gelu`` resolved (see the module docstring).

    An open_clip entry leaves ``library`` out, so every open_clip feature directory keeps the name it had before timm
    backbones existed; a timm entry names its library and has no activation to declare. The defaults of
    :data:`DEFAULT_LEFT_OUT` are left out too.
    """
    network = {
        key: spec[key]
        for key in NETWORK_KEYS
        if spec.get(key) is not None and key != "library" and spec[key] != DEFAULT_LEFT_OUT.get(key)
    }
    if backbone_library(spec) == OPEN_CLIP:
        network["quick_gelu"] = declared_quick_gelu(spec)
    else:
        network["library"] = backbone_library(spec)
    return network


def canonical_spec(spec: dict[str, Any]) -> str:
    """The network of a backbone spec (:func:`network_spec`), as canonical JSON."""
    return json.dumps(network_spec(spec), sort_keys=True)


def backbone_key(name: str, spec: dict[str, Any]) -> str:
    """``{name}-{8 hex}``: a readable directory name that changes whenever the features would."""
    return f"{name}-{hashlib.sha256(canonical_spec(spec).encode()).hexdigest()[:8]}"


def backbone_name(key: str) -> str:
    """The config name inside a :func:`backbone_key`."""
    return key.rsplit("-", 1)[0]


def run_settings(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The run settings of backbone ``name`` in a workflow config (:data:`RUN_SETTINGS`, defaults filled in)."""
    entry = config["backbones"][name]
    return {key: default if entry.get(key) is None else entry[key] for key, default in RUN_SETTINGS.items()}
