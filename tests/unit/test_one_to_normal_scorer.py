"""The one_to_normal score step: which images make the memory, which personalized images S_P reads, eq. 7's columns."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fsad.data.splits import Split
from fsad.features.types import FeatureBatch
from fsad.scorers.base import GeneratedImages, ScoringContext
from fsad.scorers.one_to_normal.scorer import score
from fsad.scorers.one_to_normal.torch_model import TextMaps, build_memory, image_score, memory_distances, position_distances

GRID, WIDTH, LEVELS = 2, 3, [1, 2]


def _store(tokens: dict[str, dict[int, torch.Tensor]]):
    """A feature lookup over ids -> level -> (P, W) tokens."""

    def load(ids):
        layers = {l: torch.stack([tokens[i][l] for i in ids]) for l in LEVELS}
        n = len(ids)
        return FeatureBatch(list(ids), torch.zeros(n, 4), torch.zeros(n, GRID * GRID, WIDTH), {}, GRID, layers)

    return load


def _context(memory_size: int, fixed: bool = True) -> tuple[ScoringContext, dict]:
    gen = torch.Generator().manual_seed(0)
    ids = ["r0", "r1", "g0", "g1", "t0", "t1", "t2"]
    tokens = {i: {l: torch.randn(GRID * GRID, WIDTH, generator=gen) for l in LEVELS} for i in ids}
    tokens["g1"] = tokens["t0"]  # a generated image identical to t0: S_N of t0 would be 0 if g1 were in the memory
    for t in ("t0", "t1", "t2"):
        tokens[t + "#fixed"] = {l: torch.randn(GRID * GRID, WIDTH, generator=gen) for l in LEVELS}
        tokens["p_" + t] = {l: torch.randn(GRID * GRID, WIDTH, generator=gen) for l in LEVELS}
    personalized = {t: tokens["p_" + t] for t in ("t0", "t1", "t2")} | {t + "#fixed": tokens[t + "#fixed"] for t in ("t0", "t1", "t2")}
    pool_index = pd.DataFrame({"image_id": ["r0", "r1", "g0", "g1"], "kind": ["reference"] * 2 + ["text_to_image", "image_to_image"]})
    personalized_index = pd.DataFrame({
        "image_id": ["t0", "t1", "t2"], "file": ["/p/0.png", "/p/1.png", "/p/2.png"], "prompt": "a photo of normal wood without flaw",
        "ssim": [0.9, 0.8, 0.7], "fixed_file": ["/p/0.fixed.png", "/p/1.fixed.png", "/p/2.fixed.png"] if fixed else "",
    })
    maps = TextMaps(LEVELS, WIDTH, 4)
    ctx = ScoringContext(
        split=Split("d", "wood", "k2", 0, 1, ["r0", "r1"], [], [], ["t0", "t1", "t2"]),
        manifest=pd.DataFrame(),
        features=_store(tokens),
        text_encoder=lambda prompts: torch.stack([torch.tensor([1.0, float("damaged" in p or " with " in p), 0.5, 0.0]) for p in prompts]),
        class_name="wood",
        params={"layers": LEVELS, "alpha": 1.0, "beta": 0.5, "memory_size": memory_size, "prompt_preset": "paper", "temperature": None, "text_normalisation": None},
        map_size=8,
        device=torch.device("cpu"),
        seed=0,
        model=maps.tensors(),
        generated_pool=GeneratedImages(pool_index, _store(tokens)),
        personalized=GeneratedImages(personalized_index, _store(personalized)),
    )
    return ctx, tokens


def _branch(distance, query, other, levels=LEVELS):
    return image_score(torch.stack([distance(query[l], other[l]) for l in levels], dim=1))


def test_the_memory_holds_the_references_then_generated_images_up_to_memory_size():
    ctx, tokens = _context(memory_size=3)
    result = score(ctx)
    stack = lambda ids, l: torch.stack([tokens[i][l] for i in ids])  # noqa: E731
    query = {l: stack(["t0", "t1", "t2"], l) for l in LEVELS}
    memory = {l: build_memory(stack(["r0", "r1", "g0"], l)) for l in LEVELS}
    expected = image_score(torch.stack([memory_distances(query[l], memory[l]) for l in LEVELS], dim=1))
    assert result.scores["s_n"].to_numpy() == pytest.approx(expected.numpy(), abs=1e-6)
    assert result.scores["s_n"].iloc[0] > 0.01  # g1 (a copy of t0) is past the memory size
    assert result.extra["memory"] == {"references": 2, "generated": 1}
    assert score(_context(memory_size=4)[0]).scores["s_n"].iloc[0] == pytest.approx(0.0, abs=1e-6)


def test_s_p_reads_each_test_images_own_personalized_image_and_the_fixed_prompt_one_for_the_ablation():
    ctx, tokens = _context(memory_size=3)
    result = score(ctx)
    stack = lambda ids, l: torch.stack([tokens[i][l] for i in ids])  # noqa: E731
    query = {l: stack(["t0", "t1", "t2"], l) for l in LEVELS}
    s_p = _branch(position_distances, query, {l: stack(["p_t0", "p_t1", "p_t2"], l) for l in LEVELS})
    s_p_fixed = _branch(position_distances, query, {l: stack(["t0#fixed", "t1#fixed", "t2#fixed"], l) for l in LEVELS})
    frame = result.scores
    assert frame["s_p"].to_numpy() == pytest.approx(s_p.numpy(), abs=1e-6)
    assert frame["s_p_fixed"].to_numpy() == pytest.approx(s_p_fixed.numpy(), abs=1e-6)
    assert frame["score"].to_numpy() == pytest.approx((frame["s_p"] + frame["s_n"] + 0.5 * frame["s_text"]).to_numpy(), abs=1e-6)
    assert frame["score_fixed"].to_numpy() == pytest.approx((frame["s_p_fixed"] + frame["s_n"] + 0.5 * frame["s_text"]).to_numpy(), abs=1e-6)
    assert ((frame["s_text"] >= 0) & (frame["s_text"] <= 1)).all()  # a probability
    assert result.maps.shape == (3, 8, 8)
    assert result.extra["personalized"]["t1"] == {"file": "/p/1.png", "prompt": "a photo of normal wood without flaw", "ssim": 0.8, "fixed_file": "/p/1.fixed.png"}


def test_without_fixed_prompt_images_there_is_no_prompt_ablation_column():
    result = score(_context(memory_size=3, fixed=False)[0])
    assert not {"s_p_fixed", "score_fixed"} & set(result.scores.columns)


def test_a_context_without_generated_images_is_refused():
    ctx, _ = _context(memory_size=3)
    ctx.generated_pool = None
    with pytest.raises(ValueError, match="pool and personalized"):
        score(ctx)
