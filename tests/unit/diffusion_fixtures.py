"""Fixtures of the diffusion tests: one torch thread, and a tiny dataset run (manifest, split, images) on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models run faster on one thread than on two of a shared 2-core machine (no threads waiting on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tiny_run(root: Path, n_refs: int = 2, n_test: int = 3, size: int = 40) -> tuple[Path, Path]:
    """Images, a manifest and a k{n_refs} split of category ``wood`` under ``root``; returns (split, manifest) paths."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_refs + n_test):
        path = root / "images" / f"img{i}.png"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
        anomalous = i == n_refs + n_test - 1
        rows.append({"image_id": f"img{i}", "category": "wood", "split": "train" if i < n_refs else "test", "label": int(anomalous),
                     "defect_type": "hole" if anomalous else "good", "image_path": str(path), "mask_path": ""})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    split = root / "split.json"
    ids = [r["image_id"] for r in rows]
    split.write_text(json.dumps({"dataset": "d", "category": "wood", "setting": f"k{n_refs}", "run": 0, "seed": 1,
                                 "normal_refs": ids[:n_refs], "anomalous_refs": [], "validation": [], "test": ids[n_refs:]}))
    return split, manifest
