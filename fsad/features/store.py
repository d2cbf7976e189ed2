"""The per-(backbone, dataset, category) HDF5 feature store: a small index file and append-only shards.

Layout of the store at ``<name>.h5``:

* ``<name>.h5``, the *index* (the file the workflow declares; small, rewritten by every update): root
  attributes ``format``, ``backbone_spec`` (canonical JSON of the network, checked on update), ``weights``
  (provenance), ``environment`` (JSON: the versions of python, torch, open_clip, ... and fsad that wrote it,
  :mod:`fsad.provenance`), ``grid``, ``storage_dtype`` and ``window_sizes``, ``layers``, ``vv_layers``, ``mid_layers`` (what every
  image holds), and the dataset ``shards``: the names of the committed shards, oldest first.
* ``<name>.shards/00001.h5``, ``00002.h5``, ...: the features. Each holds one group per image id with some of
  ``image_embedding`` ``(D,)``, ``patch_tokens`` ``(P, W)``, ``windows/{k}`` ``(n_k, D)``, ``layers/{n}``
  ``(P, W)``, ``vv_layers/{n}`` ``(P, W)`` and ``mid_layers/{n}`` ``(P, W)``; every (image, dataset) lives in exactly one shard.

Values are encoded in float32 and stored as the backbone's ``storage_dtype`` (float16 by default: about
0.87 MB per image for ViT-B-16-plus-240 with windows 2 and 3, 2.8 MB per layer of ViT-L-14 at 518 px,
1369 x 1024 tokens; float32 doubles that). :meth:`FeatureStore.load` always returns float32.

The store only grows: :meth:`FeatureStore.update` encodes the images that are missing and, for images
already there, only the window sizes, layers and V-V layers that are missing (windows from the patch
embedding, without the full-image pass; layers from one pass that stops after the last block asked for).
It writes them to one new shard (fsynced, renamed into place), then replaces the index atomically, so its
cost grows with what it adds, not with the store, and a job killed at any point leaves the previous index
and its shards readable. The next update deletes what such a job left: shards no index lists and
temporary files. Without an index the store starts over (its shard directory is removed first).

A store written under other torch or open_clip versions than the running ones is refused, by updates and by
loads alike, with both sets of versions and the fix (delete the store; the next job that reads it rebuilds it):
new features are never mixed with old ones, nor old features with text embeddings computed now.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch

from fsad.features.parts import PART_NAMES, Parts, plan_update
from fsad.features.types import FeatureBatch
from fsad.io import atomic_path, remove_stale_temporaries
from fsad.provenance import check_same_numerics, environment

if TYPE_CHECKING:
    from fsad.backbones.loading import Backbone

log = logging.getLogger(__name__)

# Encodes images for an update: (paths by image id, parts, with_image) -> batches of (image ids, their features).
Encoder = Callable[[dict[str, str], Parts, bool], Iterable[tuple[list[str], FeatureBatch]]]

FORMAT = "fsad-feature-store/sharded-1"
STORAGE_DTYPES = ("float16", "float32")
DEFAULT_STORAGE_DTYPE = "float16"


def storage_dtype(spec: dict[str, Any]) -> str:
    """The dtype a backbone's features are stored in (its ``storage_dtype``, float16 when absent)."""
    dtype = spec.get("storage_dtype") or DEFAULT_STORAGE_DTYPE
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"backbone {spec.get('arch')}: storage_dtype {dtype!r} is not one of {list(STORAGE_DTYPES)}; fix it in the config")
    return dtype


def _datasets(features: FeatureBatch, with_image: bool) -> dict[str, np.ndarray]:
    """HDF5 dataset name (below the image's group) -> the batch's float32 values, one row per image."""
    named = {"image_embedding": features.image_embeddings, "patch_tokens": features.patch_tokens} if with_image else {}
    for group, _, _ in PART_NAMES.values():
        named |= {f"{group}/{k}": value for k, value in getattr(features, group).items()}
    return {name: value.detach().float().cpu().numpy() for name, value in named.items()}


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or a directory, for the names in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Index:
    """What the index file holds: the root attributes and the committed shards' file names, oldest first."""

    attrs: dict[str, Any]
    shards: list[str]


class FeatureStore:
    """Read and grow one feature store (see the module docstring for its layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.shard_dir = self.path.with_suffix(".shards")

    # --- reading -------------------------------------------------------------------------------

    def _index(self) -> _Index | None:
        """The index; None when there is no store."""
        if not self.path.exists():
            return None
        try:
            with h5py.File(self.path, "r") as h5:
                attrs = dict(h5.attrs)
                shards = list(h5["shards"].asstr()[()]) if "shards" in h5 else None
        except OSError as err:
            raise OSError(f"{self.path}: unreadable feature store index ({err}); delete it and rerun extract_features") from err
        if attrs.get("format") != FORMAT or shards is None:
            raise ValueError(
                f"{self.path}: not a feature store index of format {FORMAT} (an older, single-file store?); "
                "delete it and rerun extract_features"
            )
        return _Index(attrs, shards)

    def _require_index(self) -> _Index:
        index = self._index()
        if index is None:
            raise FileNotFoundError(f"{self.path}: feature store not found; run extract_features for it")
        return index

    @contextmanager
    def _open_shards(self, index: _Index) -> Iterator[list[h5py.File]]:
        """The index's shards, open read-only, oldest first."""
        with ExitStack() as stack:
            opened = []
            for name in index.shards:
                shard = self.shard_dir / name
                fix = f"delete the index {self.path} and rerun extract_features (it recomputes the whole store)"
                if not shard.is_file():
                    raise FileNotFoundError(f"{shard}: shard of the feature store {self.path} is missing; {fix}")
                try:
                    opened.append(stack.enter_context(h5py.File(shard, "r")))
                except OSError as err:
                    raise OSError(f"{shard}: unreadable shard of the feature store {self.path} ({err}); {fix}") from err
            yield opened

    @property
    def weights(self) -> str:
        return str(self._require_index().attrs["weights"])

    @property
    def environment(self) -> dict[str, Any] | None:
        """The versions the store was written under (:func:`fsad.provenance.environment`); None for a store older than that record."""
        recorded = self._require_index().attrs.get("environment")
        return json.loads(recorded) if recorded is not None else None

    def _check_environment(self, index: _Index) -> None:
        recorded = index.attrs.get("environment")
        check_same_numerics(
            json.loads(recorded) if recorded is not None else None,
            f"the feature store {self.path}",
            f"delete it ({self.path} and {self.shard_dir}); the next job that reads it rebuilds it under the running versions",
        )

    @property
    def storage_dtype(self) -> str:
        """The dtype the store's values are kept in (float16 or float32)."""
        return str(self._require_index().attrs["storage_dtype"])

    @property
    def parts(self) -> Parts:
        """What every image of the store holds."""
        attrs = self._require_index().attrs
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

    @property
    def mid_layers(self) -> list[int]:
        return list(self.parts.mid_layers)

    def shard_paths(self) -> list[Path]:
        """The committed shards, oldest first (none without a store)."""
        index = self._index()
        return [self.shard_dir / name for name in index.shards] if index else []

    def _holdings(self, index: _Index | None) -> dict[str, Parts]:
        """Image id -> the parts that image holds, over every shard; empty when there is no store."""
        if index is None:
            return {}
        holdings: dict[str, Parts] = {}
        with self._open_shards(index) as shards:
            for shard in shards:
                for image_id, stored in shard.items():
                    held = Parts.of(**{part: stored[group].keys() if group in stored else () for part, (group, *_) in PART_NAMES.items()})
                    holdings[image_id] = holdings.get(image_id, Parts()) | held
        return holdings

    def image_ids(self) -> list[str]:
        """The stored images, sorted."""
        index = self._index()
        if index is None:
            return []
        with self._open_shards(index) as shards:
            return sorted({image_id for shard in shards for image_id, group in shard.items() if "image_embedding" in group})

    def load(
        self,
        image_ids: list[str],
        window_sizes: Collection[int] | None = None,
        layers: Collection[int] | None = None,
        vv_layers: Collection[int] | None = None,
        mid_layers: Collection[int] | None = None,
        device: torch.device | str = "cpu",
    ) -> FeatureBatch:
        """Features of ``image_ids`` in that order, float32 whatever the storage dtype.

        Each of ``window_sizes``, ``layers``, ``vv_layers`` and ``mid_layers`` selects what to read; None reads all the
        store holds, ``[]`` none.
        """
        index = self._require_index()
        self._check_environment(index)
        held = Parts.of(**{part: index.attrs.get(part, ()) for part in PART_NAMES})
        requested = {"window_sizes": window_sizes, "layers": layers, "vv_layers": vv_layers, "mid_layers": mid_layers}
        asked = Parts.of(**{part: getattr(held, part) if value is None else value for part, value in requested.items()})
        with self._open_shards(index) as shards:

            def locate(image_id: str, key: str) -> h5py.Dataset | None:
                name = f"{image_id}/{key}"
                return next((shard[name] for shard in shards if name in shard), None)

            missing = [i for i in image_ids if locate(i, "image_embedding") is None]
            if missing:
                raise KeyError(f"{self.path}: no features of {missing[:5]}; rerun extract_features for this category")
            for part, (group, what, config_key) in PART_NAMES.items():
                absent = sorted({k for i in image_ids for k in getattr(asked, part) if locate(i, f"{group}/{k}") is None})
                if absent:
                    raise KeyError(f"{self.path}: {what} {absent} are not cached; add them to {config_key} in the config")

            def stack(key: str) -> torch.Tensor:
                sources = [locate(i, key) for i in image_ids]
                if not sources:
                    return torch.empty(0, device=device)
                rows = np.empty((len(sources), *sources[0].shape), dtype=sources[0].dtype)
                for row, source in enumerate(sources):
                    source.read_direct(rows, dest_sel=np.s_[row])
                return torch.from_numpy(rows).to(device=device, dtype=torch.float32)

            return FeatureBatch(
                image_ids=list(image_ids),
                image_embeddings=stack("image_embedding"),
                patch_tokens=stack("patch_tokens"),
                windows={k: stack(f"windows/{k}") for k in asked.window_sizes},
                grid=int(index.attrs["grid"]),
                layers={n: stack(f"layers/{n}") for n in asked.layers},
                vv_layers={n: stack(f"vv_layers/{n}") for n in asked.vv_layers},
                mid_layers={n: stack(f"mid_layers/{n}") for n in asked.mid_layers},
            )

    # --- updating ------------------------------------------------------------------------------

    def _check_compatible(self, index: _Index, backbone: Backbone, dtype: str) -> None:
        from fsad.backbones.spec import canonical_spec

        attrs = index.attrs
        self._check_environment(index)
        if attrs["storage_dtype"] != dtype:
            raise ValueError(
                f"{self.path}: stores {attrs['storage_dtype']} values but the backbone's storage_dtype is {dtype}; feature "
                f"directories are named by a hash of the spec (storage_dtype included), so this store was moved: delete "
                f"{self.path} and {self.shard_dir} and rerun extract_features"
            )
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

    def _remove_leftovers(self) -> _Index | None:
        """Delete what killed updates left (a job killed by SIGKILL cannot): temporary index files, shards no
        index lists, and the whole shard directory when the index is gone; return the index."""
        for stale in remove_stale_temporaries(self.path):
            log.warning("removed %s, left by an update of %s that was killed", stale, self.path.name)
        index = self._index()
        if not self.shard_dir.exists():
            return index
        if index is None:
            log.warning("%s has no index %s (deleted, or never committed): removing it, the store starts over", self.shard_dir, self.path.name)
            shutil.rmtree(self.shard_dir)
            return None
        for leftover in sorted(set(os.listdir(self.shard_dir)) - set(index.shards)):
            log.warning("removed %s, left by an update of %s that was killed", self.shard_dir / leftover, self.path.name)
            target = self.shard_dir / leftover
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        return index

    def update(
        self,
        backbone: Backbone,
        image_paths: dict[str, str],
        window_sizes: Collection[int],
        encode: Encoder,
        *,
        layers: Collection[int] = (),
        vv_layers: Collection[int] = (),
        mid_layers: Collection[int] = (),
    ) -> dict[str, Any]:
        """Store what is missing, encoded by ``encode``: new images (every part) and the missing parts of cached images.

        Args:
            backbone: the network ``encode`` runs (its spec, weights and grid are checked against the store's).
            window_sizes, layers, vv_layers: what every image of ``image_paths`` must hold (parts the store
                already holds are kept, never dropped).
            encode: ``(paths by image id, parts, with_image) -> (image ids, FeatureBatch)`` batches, in any
                order (:func:`fsad.features.extract.batch_encoder`).

        Returns:
            a summary: counts (``encoded`` new images, ``extended`` cached images given the ``added`` parts),
            weights, storage dtype, ``bytes`` of the shard written now (0 when nothing was missing) and of the
            whole store (``store_bytes``), seconds and images per second of the encoding done now.

        Only one job may update a store at a time (the workflow runs one job per store).
        """
        from fsad.backbones.spec import canonical_spec

        backbone.check_indices(layers, vv_layers, mid_layers)
        dtype = storage_dtype(backbone.spec)
        index = self._remove_leftovers()
        if index is not None:
            self._check_compatible(index, backbone, dtype)
        plan = plan_update(self._holdings(index), list(image_paths), Parts.of(window_sizes, layers, vv_layers, mid_layers))
        shards = index.shards if index else []
        summary = {
            "images": len(image_paths),
            "encoded": len(plan.new_ids),
            "extended": sum(map(len, plan.extensions.values())),
            "added": reduce(Parts.__or__, plan.extensions, Parts()).as_dict(),
            "weights": backbone.weights,
            "storage_dtype": dtype,
            "environment": environment(),
        }
        if not plan.new_ids and not plan.extensions:
            return summary | {"bytes": 0, "store_bytes": self._size(shards), "seconds": 0.0, "images_per_second": None}

        started = time.perf_counter()
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        name = f"{max((int(Path(s).stem) for s in shards), default=0) + 1:05d}.h5"
        with atomic_path(self.shard_dir / name) as tmp:
            # HDF5 1.10's compact groups: about 4 kB less per image than the 1.8 format's B-trees
            with h5py.File(tmp, "w", libver=("v110", "latest")) as h5:
                arch = backbone.spec.get("arch")
                if plan.new_ids:
                    self._write(h5, encode({i: image_paths[i] for i in plan.new_ids}, plan.new_parts, True), True, dtype, arch)
                for missing, ids in plan.extensions.items():
                    if ids:
                        self._write(h5, encode({i: image_paths[i] for i in ids}, missing, False), False, dtype, arch)
            _fsync(tmp)
        _fsync(self.shard_dir)
        attrs = {
            "format": FORMAT,
            "backbone_spec": canonical_spec(backbone.spec),
            "weights": backbone.weights,
            "environment": json.dumps(environment(), sort_keys=True),
            "grid": backbone.grid,
            "storage_dtype": dtype,
            **{part: np.array(values, dtype=np.int64) for part, values in plan.every_image.as_dict().items()},
        }
        self._write_index(attrs, [*shards, name])
        seconds = time.perf_counter() - started
        encoded = summary["encoded"] + summary["extended"]
        return summary | {
            "bytes": (self.shard_dir / name).stat().st_size,
            "store_bytes": self._size([*shards, name]),
            "seconds": round(seconds, 3),
            "images_per_second": round(encoded / seconds, 3),
        }

    def _size(self, shards: list[str]) -> int:
        return sum((self.shard_dir / name).stat().st_size for name in shards)

    def _write_index(self, attrs: dict[str, Any], shards: list[str]) -> None:
        """Replace the index atomically (the shards it lists are already on disk)."""
        with atomic_path(self.path) as tmp:
            with h5py.File(tmp, "w") as h5:
                h5.attrs.update(attrs)
                h5.create_dataset("shards", data=shards, dtype=h5py.string_dtype())
            _fsync(tmp)
        _fsync(self.path.parent)

    @staticmethod
    def _write(h5: h5py.File, batches: Iterable[tuple[list[str], FeatureBatch]], with_image: bool, dtype: str, arch: str | None) -> None:
        """Write each batch's values, one group per image, in ``dtype``; refuse values that overflow it."""
        for batch_ids, features in batches:
            for name, values in _datasets(features, with_image).items():
                with np.errstate(over="ignore"):
                    stored = values.astype(dtype)
                if not np.isfinite(stored).all() and np.isfinite(values).all():
                    raise ValueError(
                        f"{name} of {batch_ids} exceeds the range of {dtype} (largest magnitude {np.abs(values).max():.4g}); "
                        f"set storage_dtype: float32 for backbone {arch} in the config"
                    )
                for row, image_id in enumerate(batch_ids):
                    h5.require_group(image_id).create_dataset(name, data=stored[row])
