"""The per-(backbone, dataset, category) HDF5 feature store.

Layout: one group per image id holding ``image_embedding`` ``(D,)``, ``patch_tokens`` ``(P, W)``,
``windows/{k}`` ``(n_k, D)``, ``layers/{n}`` ``(P, W)`` and ``vv_layers/{n}`` ``(P, W)``, float32
(ViT-B-16-plus-240 with windows 2 and 3: about 1.7 MB per image; each layer of ViT-L-14 at 518 px,
1369 x 1024 tokens: 5.6 MB per image). Root attributes: ``backbone_spec`` (canonical JSON, checked on
open), ``weights`` (provenance), ``grid``, and ``window_sizes``, ``layers``, ``vv_layers`` (what every
image holds).

The store only grows: :meth:`FeatureCache.update` encodes the images that are missing and, for images
already there, only the window sizes, layers and V-V layers that are missing (windows from the patch
embedding, without the full-image pass; layers from one pass that stops after the last block asked for).
Each update writes a copy beside the store and renames it over the store, so a job killed halfway leaves
the previous store intact; the copy such a job leaves behind is removed by the next update.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Collection
from functools import reduce
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fsad.backbones.loading import Backbone
from fsad.backbones.spec import canonical_spec
from fsad.backbones.taps import check_block_indices
from fsad.backbones.window_embeddings import encode_images
from fsad.data.images import read_image
from fsad.features.parts import PART_NAMES, Parts, plan_update
from fsad.features.types import FeatureBatch
from fsad.io import atomic_path, remove_stale_temporaries

log = logging.getLogger(__name__)


class _PreprocessedImages(Dataset):
    """Images of ``paths`` in order, read and preprocessed (so a DataLoader can prefetch them)."""

    def __init__(self, paths: list[str], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocess(read_image(self.paths[index]))


def _datasets(features: FeatureBatch, row: int, with_image: bool) -> dict[str, torch.Tensor]:
    """HDF5 dataset name -> the tensor of image ``row`` of ``features``."""
    named = {"image_embedding": features.image_embeddings, "patch_tokens": features.patch_tokens} if with_image else {}
    for group, _, _ in PART_NAMES.values():
        named |= {f"{group}/{k}": value for k, value in getattr(features, group).items()}
    return {name: value[row] for name, value in named.items()}


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
    def weights(self) -> str:
        return str(self._attrs()["weights"])

    @property
    def parts(self) -> Parts:
        """What every image of the store holds (stores written before layers existed hold none)."""
        attrs = self._attrs()
        return Parts.of(**{part: attrs.get(part, ()) for part in PART_NAMES})

    @property
    def window_sizes(self) -> list[int]:
        return list(self.parts.window_sizes)

    @property
    def layers(self) -> list[int]:
        return list(self.parts.layers)

    @property
    def vv_layers(self) -> list[int]:
        return list(self.parts.vv_layers)

    def _holdings(self) -> dict[str, Parts]:
        """Image id -> the parts that image holds; empty when there is no store."""
        if not self.path.exists():
            return {}
        with h5py.File(self.path, "r") as h5:
            return {
                image_id: Parts.of(**{part: stored[group].keys() if group in stored else () for part, (group, *_) in PART_NAMES.items()})
                for image_id, stored in h5.items()
            }

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

    def _remove_stale_copies(self) -> None:
        """Delete the copies that killed updates of this store left beside it (a job killed by SIGKILL cannot)."""
        for stale in remove_stale_temporaries(self.path):
            log.warning("removed %s, left by an update of %s that was killed", stale, self.path.name)

    def update(
        self,
        backbone: Backbone,
        image_paths: dict[str, str],
        window_sizes: Collection[int],
        batch_size: int = 8,
        workers: int = 0,
        *,
        layers: Collection[int] = (),
        vv_layers: Collection[int] = (),
    ) -> dict[str, Any]:
        """Encode what is missing: new images (every part) and the missing parts of cached images.

        Args:
            window_sizes, layers, vv_layers: what every image of ``image_paths`` must hold (parts the store
                already holds are kept, never dropped).
            workers: processes that decode and preprocess the next batches while the device encodes
                (0: in this process; worth it on a GPU, where decoding would otherwise keep it waiting).

        Returns:
            a summary: counts (``encoded`` new images, ``extended`` cached images given the ``added`` parts),
            weights, seconds and images per second of the encoding done now.

        Only one job may update a store at a time (the workflow runs one job per store).
        """
        check_block_indices(backbone.depth, layers, vv_layers)
        self._remove_stale_copies()
        holdings = self._holdings()
        if holdings:
            self._check_compatible(backbone)
        plan = plan_update(holdings, list(image_paths), Parts.of(window_sizes, layers, vv_layers))
        summary = {
            "images": len(image_paths),
            "encoded": len(plan.new_ids),
            "extended": sum(map(len, plan.extensions.values())),
            "added": reduce(Parts.__or__, plan.extensions, Parts()).as_dict(),
            "weights": backbone.weights,
        }
        if not plan.new_ids and not plan.extensions:
            return summary | {"seconds": 0.0, "images_per_second": None}

        started = time.perf_counter()
        with atomic_path(self.path) as tmp:
            if self.path.exists():
                shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "a") as h5:
                h5.attrs["backbone_spec"] = canonical_spec(backbone.spec)
                h5.attrs["weights"] = backbone.weights
                h5.attrs["grid"] = backbone.grid
                self._encode(h5, backbone, {i: image_paths[i] for i in plan.new_ids}, plan.new_parts, batch_size, workers, True)
                for missing, ids in plan.extensions.items():
                    self._encode(h5, backbone, {i: image_paths[i] for i in ids}, missing, batch_size, workers, False)
                for name, values in plan.every_image.as_dict().items():
                    h5.attrs[name] = np.array(values, dtype=np.int64)
                h5.flush()
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        seconds = time.perf_counter() - started
        encoded = summary["encoded"] + summary["extended"]
        return summary | {"seconds": round(seconds, 3), "images_per_second": round(encoded / seconds, 3)}

    @staticmethod
    def _encode(
        h5: h5py.File,
        backbone: Backbone,
        paths: dict[str, str],
        parts: Parts,
        batch_size: int,
        workers: int,
        with_image: bool,
    ) -> None:
        ids = list(paths)
        if not ids:
            return
        what = "images" if with_image else ", ".join(f"{name} {values}" for name, values in parts.as_dict().items() if values)
        batches = DataLoader(
            _PreprocessedImages([paths[i] for i in ids], backbone.preprocess),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=backbone.device.type == "cuda",
            # fork: the workers only decode images (no CUDA), and the preprocessing holds lambdas
            multiprocessing_context="fork" if workers else None,
        )
        for start, pixels in zip(range(0, len(ids), batch_size), tqdm(batches, desc=f"encoding {what}", unit="batch")):
            features = encode_images(
                backbone,
                pixels,
                list(parts.window_sizes),
                with_image=with_image,
                layers=list(parts.layers),
                vv_layers=list(parts.vv_layers),
            )
            for row, image_id in enumerate(ids[start : start + batch_size]):
                group = h5.require_group(image_id)
                for name, value in _datasets(features, row, with_image).items():
                    group.create_dataset(name, data=value.cpu().numpy())

    def load(
        self,
        image_ids: list[str],
        window_sizes: Collection[int] | None = None,
        layers: Collection[int] | None = None,
        vv_layers: Collection[int] | None = None,
        device: torch.device | str = "cpu",
    ) -> FeatureBatch:
        """Features of ``image_ids`` in that order, float32.

        Each of ``window_sizes``, ``layers`` and ``vv_layers`` selects what to read; None reads all the
        store holds, ``[]`` none.
        """
        attrs, held = self._attrs(), self.parts
        requested = {"window_sizes": window_sizes, "layers": layers, "vv_layers": vv_layers}
        asked = Parts.of(**{part: getattr(held, part) if value is None else value for part, value in requested.items()})
        with h5py.File(self.path, "r") as h5:
            missing = [i for i in image_ids if i not in h5]
            if missing:
                raise KeyError(f"{self.path}: no features of {missing[:5]}; rerun extract_features for this category")
            for part, (group, what, config_key) in PART_NAMES.items():
                absent = sorted({k for i in image_ids for k in getattr(asked, part) if f"{group}/{k}" not in h5[i]})
                if absent:
                    raise KeyError(f"{self.path}: {what} {absent} are not cached; add them to {config_key} in the config")
            stack = lambda key: torch.from_numpy(np.stack([h5[i][key][()] for i in image_ids])).to(device)  # noqa: E731
            return FeatureBatch(
                image_ids=list(image_ids),
                image_embeddings=stack("image_embedding"),
                patch_tokens=stack("patch_tokens"),
                windows={k: stack(f"windows/{k}") for k in asked.window_sizes},
                grid=int(attrs["grid"]),
                layers={n: stack(f"layers/{n}") for n in asked.layers},
                vv_layers={n: stack(f"vv_layers/{n}") for n in asked.vv_layers},
            )
