"""WinCLIP+ with a generator's pool among its references (One-to-Normal's transfer experiment)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fsad.data.splits import Split
from fsad.features.types import FeatureBatch
from fsad.scorers.base import GeneratedImages, ScoringContext
from fsad.scorers.registry import method_params
from fsad.scorers.winclip.method import METHOD
from fsad.scorers.winclip.scorer import score

GRID, DIM, WIDTH, WINDOWS = 4, 6, 8, (2, 3)


def _features(tokens: dict[str, int]):
    """Features of image ids; images sharing a seed in ``tokens`` share every feature."""

    def load(ids):
        gens = [torch.Generator().manual_seed(tokens[i]) for i in ids]
        draw = lambda *shape: torch.stack([torch.randn(*shape, generator=g) for g in gens])  # noqa: E731
        return FeatureBatch(list(ids), draw(DIM), draw(GRID * GRID, WIDTH), {k: draw((GRID - k + 1) ** 2, DIM) for k in WINDOWS}, GRID)

    return load


def _context(generator: str | None, generated_references: int | None = None) -> ScoringContext:
    seeds = {"ref": 1, "t0": 2, "t1": 3, "g0": 4, "g1": 2}  # g1 is a copy of the test image t0
    params = method_params(METHOD, {"generator": generator, "generated_references": generated_references})
    pool = GeneratedImages(pd.DataFrame({"image_id": ["ref", "g0", "g1"], "kind": ["reference", "text_to_image", "image_to_image"]}), _features(seeds))
    return ScoringContext(
        split=Split("d", "wood", "k1", 0, 0, ["ref"], [], [], ["t0", "t1"]),
        manifest=pd.DataFrame(),
        features=_features(seeds),
        text_encoder=lambda prompts: torch.randn(len(prompts), DIM, generator=torch.Generator().manual_seed(len(prompts))),
        class_name="wood",
        params=params,
        map_size=8,
        device=torch.device("cpu"),
        seed=0,
        generated_pool=pool if generator else None,
    )


def test_winclip_declares_a_pool_only_when_a_generator_is_set():
    assert METHOD.generated(method_params(METHOD, {})).generator is None
    declared = METHOD.generated(method_params(METHOD, {"generator": "tiny"}))
    assert (declared.generator, declared.pool, declared.personalized) == ("tiny", True, False)


def test_the_generated_images_join_the_references_up_to_the_count_asked():
    alone = score(_context(None)).scores.set_index("image_id")
    with_pool = score(_context("tiny")).scores.set_index("image_id")
    first_only = score(_context("tiny", generated_references=1)).scores.set_index("image_id")
    # a copy of t0 in the memory: every memory scale of t0 finds a distance of 0
    assert with_pool.loc["t0", ["memory_patch", "memory_w2", "memory_w3"]].tolist() == pytest.approx([0, 0, 0], abs=1e-6)
    assert alone.loc["t0", "memory_patch"] > 0.01 and first_only.loc["t0", "memory_patch"] > 0.01
    # more references never raise a nearest-neighbour distance
    assert (with_pool["memory_patch"] <= first_only["memory_patch"] + 1e-6).all() and (first_only["memory_patch"] <= alone["memory_patch"] + 1e-6).all()
    assert alone["zero_shot"].tolist() == with_pool["zero_shot"].tolist()
