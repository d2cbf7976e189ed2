"""The per-(backbone, dataset, category) HDF5 feature store.

Layout: one group per image id holding ``image_embedding`` ``(D,)``, ``patch_tokens`` ``(P, W)`` and
``windows/{k}`` ``(n_k, D)``, float32 (ViT-B-16-plus-240 with windows 2 and 3: about 1.7 MB per image).
Root attributes: ``backbone_spec`` (canonical JSON, checked on open), ``weights`` (provenance),
``grid`` and ``window_sizes`` (the sizes every image holds).

The store only grows: :meth:`FeatureCache.update` encodes the images that are missing and, for images
already there, only the window sizes that are missing (from the patch embedding, without the
full-image pass). Each update writes a copy beside the store and renames it over the store, so a job
killed halfway leaves the previous store intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fsad.backbones.loading import Backbone
from fsad.backbones.window_embeddings import encode_images
from fsad.features.types import FeatureBatch
from fsad.io import atomic_path

log = logging.getLogger(__name__)
SPEC_KEYS = ("arch", "pretrained", "image_size", "layers")


def canonical_spec(spec: dict[str, Any]) -> str:
    """The parts of a backbone spec that change features, as canonical JSON (window sizes, batch size and precision do not)."""
    return json.dumps({k: spec[k] for k in SPEC_KEYS if spec.get(k) is not None}, sort_keys=True)


def backbone_key(name: str, spec: dict[str, Any]) -> str:
    """``{name}-{8 hex}``: a readable directory name that changes whenever the features would."""
    return f"{name}-{hashlib.sha256(canonical_spec(spec).encode()).hexdigest()[:8]}"


def read_image(path: str | Path) -> Image.Image:
    """Open an image fully (so a truncated file fails here), naming the file when it cannot be read."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found; rerun prepare_dataset for its dataset") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: corrupt or unreadable image ({err}); replace the file or remove it from the dataset") from err


class _PreprocessedImages(Dataset):
    """Images of ``paths`` in order, read and preprocessed (so a DataLoader can prefetch them)."""

    def __init__(self, paths: list[str], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocess(read_image(self.paths[index]))


class FeatureCache:
    """Read and grow one feature store."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _attrs(self) -> dict[str, Any]:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: feature store not found; run extract_features for it")
        with h5py.File(self.path, "r") as h5:
            return dict(h5.attrs)

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self._attrs()["backbone_spec"])

    @property
    def weights(self) -> str:
        return str(self._attrs()["weights"])

    @property
    def window_sizes(self) -> list[int]:
        return [int(k) for k in self._attrs()["window_sizes"]]

    def image_ids(self) -> list[str]:
        if not self.path.exists():
            return []
        with h5py.File(self.path, "r") as h5:
            return list(h5.keys())

    def _check_compatible(self, backbone: Backbone) -> None:
        attrs = self._attrs()
        if attrs["backbone_spec"] != canonical_spec(backbone.spec):
            raise ValueError(
                f"{self.path}: holds features of {attrs['backbone_spec']}, not of {canonical_spec(backbone.spec)}; "
                "feature directories are named by a hash of the spec, so this file was moved or edited: delete it and rerun"
            )
        if attrs["weights"] != backbone.weights:
            raise ValueError(
                f"{self.path}: holds features computed with weights {attrs['weights']!r} but the backbone now has "
                f"{backbone.weights!r}; delete {self.path.parent} and rerun to recompute them"
            )

    def update(
        self,
        backbone: Backbone,
        image_paths: dict[str, str],
        window_sizes: list[int],
        batch_size: int = 8,
        workers: int = 0,
    ) -> dict[str, Any]:
        """Encode what is missing: new images (all features) and new window sizes of cached images.

        Args:
            workers: processes that decode and preprocess the next batches while the device encodes
                (0: in this process; worth it on a GPU, where decoding would otherwise keep it waiting).

        Returns:
            a summary: counts, weights, seconds and images per second of the encoding done now.
        """
        window_sizes = sorted(set(int(k) for k in window_sizes))
        cached = set(self.image_ids())
        if cached:
            self._check_compatible(backbone)
            have = set(self.window_sizes)
        else:
            have = set(window_sizes)
        all_sizes = sorted(have | set(window_sizes))
        new_ids = sorted(set(image_paths) - cached)
        extra_sizes = sorted(set(window_sizes) - have)
        extend_ids = sorted(set(image_paths) & cached) if extra_sizes else []
        summary = {"images": len(image_paths), "encoded": len(new_ids), "windows_added": len(extend_ids), "weights": backbone.weights}
        if not new_ids and not extend_ids:
            return summary | {"seconds": 0.0, "images_per_second": None}

        started = time.perf_counter()
        with atomic_path(self.path) as tmp:
            if self.path.exists():
                shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "a") as h5:
                h5.attrs["backbone_spec"] = canonical_spec(backbone.spec)
                h5.attrs["weights"] = backbone.weights
                h5.attrs["grid"] = backbone.grid
                self._encode(h5, backbone, {i: image_paths[i] for i in new_ids}, all_sizes, batch_size, workers, True)
                self._encode(h5, backbone, {i: image_paths[i] for i in extend_ids}, extra_sizes, batch_size, workers, False)
                h5.attrs["window_sizes"] = all_sizes
                h5.flush()
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        seconds = time.perf_counter() - started
        return summary | {"seconds": round(seconds, 3), "images_per_second": round((len(new_ids) + len(extend_ids)) / seconds, 3)}

    @staticmethod
    def _encode(
        h5: h5py.File,
        backbone: Backbone,
        paths: dict[str, str],
        window_sizes: list[int],
        batch_size: int,
        workers: int,
        with_image: bool,
    ) -> None:
        ids = list(paths)
        if not ids:
            return
        what = "images" if with_image else f"windows {window_sizes}"
        batches = DataLoader(
            _PreprocessedImages([paths[i] for i in ids], backbone.preprocess),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=backbone.device.type == "cuda",
            # fork: the workers only decode images (no CUDA), and the preprocessing holds lambdas
            multiprocessing_context="fork" if workers else None,
        )
        for start, pixels in zip(range(0, len(ids), batch_size), tqdm(batches, desc=f"encoding {what}", unit="batch")):
            batch_ids = ids[start : start + batch_size]
            features = encode_images(backbone, pixels, window_sizes, with_image=with_image)
            for row, image_id in enumerate(batch_ids):
                group = h5.require_group(image_id)
                if with_image:
                    group.create_dataset("image_embedding", data=features.image_embeddings[row].cpu().numpy())
                    group.create_dataset("patch_tokens", data=features.patch_tokens[row].cpu().numpy())
                for k, emb in features.windows.items():
                    group.create_dataset(f"windows/{k}", data=emb[row].cpu().numpy())

    def load(
        self, image_ids: list[str], window_sizes: list[int] | None = None, device: torch.device | str = "cpu"
    ) -> FeatureBatch:
        """Features of ``image_ids`` in that order (all cached window sizes unless ``window_sizes`` is given), float32."""
        attrs = self._attrs()
        sizes = [int(k) for k in (window_sizes if window_sizes is not None else attrs["window_sizes"])]
        with h5py.File(self.path, "r") as h5:
            missing = [i for i in image_ids if i not in h5]
            if missing:
                raise KeyError(f"{self.path}: no features of {missing[:5]}; rerun extract_features for this category")
            absent = sorted({k for i in image_ids for k in sizes if f"windows/{k}" not in h5[i]})
            if absent:
                raise KeyError(
                    f"{self.path}: window sizes {absent} are not cached; add them to the backbone's window_sizes "
                    "(or the dataset's extra_window_sizes) in the config"
                )
            stack = lambda key: torch.from_numpy(np.stack([h5[i][key][()] for i in image_ids])).to(device)  # noqa: E731
            return FeatureBatch(
                image_ids=list(image_ids),
                image_embeddings=stack("image_embedding"),
                patch_tokens=stack("patch_tokens"),
                windows={k: stack(f"windows/{k}") for k in sizes},
                grid=int(attrs["grid"]),
            )
