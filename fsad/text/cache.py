"""A content-keyed cache of prompt embeddings, so jobs that share a backbone and prompts encode them once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from fsad.io import atomic_path


def cached_text_encoder(
    encode: Callable[[list[str]], torch.Tensor], cache_dir: str | Path, identity: object
) -> Callable[[list[str]], torch.Tensor]:
    """Wrap ``encode`` so that each prompt list is encoded once per ``identity`` (backbone spec and weights).

    The file name is a hash of ``identity`` and the prompts, so a cached entry can only be reused for the
    same weights and the same prompts; entries are written atomically (safetensors).
    """

    def encode_cached(prompts: list[str]) -> torch.Tensor:
        key = hashlib.sha256(json.dumps([identity, prompts], sort_keys=True).encode()).hexdigest()[:24]
        path = Path(cache_dir) / f"{key}.safetensors"
        if path.exists():
            return load_file(path)["embeddings"]
        embeddings = encode(prompts)
        with atomic_path(path) as tmp:
            save_file({"embeddings": embeddings.detach().float().cpu().contiguous()}, str(tmp))
        return embeddings

    return encode_cached
