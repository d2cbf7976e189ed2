"""One-to-Normal's three branches and eq. 7 against hand computations on tokens chosen so each value is known."""

from __future__ import annotations

import math

import pytest
import torch

from fsad.scorers.one_to_normal.torch_model import (
    TextMaps,
    build_memory,
    combine,
    image_score,
    memory_distances,
    position_distances,
    text_probabilities,
    text_score_focal_loss,
    triplet_scores,
)

E1, E2 = [1.0, 0.0], [0.0, 1.0]
DIAGONAL = [math.sqrt(0.5), math.sqrt(0.5)]


def tokens(*rows):
    """``(1, P, 2)`` tokens of one image, one row per position."""
    return torch.tensor([rows], dtype=torch.float32)


def test_s_p_is_one_minus_cosine_at_each_position_max_over_positions_mean_over_levels():
    query = {1: tokens(E1, E1, E2), 2: tokens(E1, E2, E2)}
    personalized = {1: tokens(E1, E2, E2), 2: tokens([-1.0, 0.0], E2, DIAGONAL)}
    # level 1: distances 0, 1, 0 -> max 1; level 2: 2, 0, 1 - sqrt(1/2) -> max 2; mean 1.5
    torch.testing.assert_close(position_distances(query[1], personalized[1]), torch.tensor([[0.0, 1.0, 0.0]]))
    per_level = torch.stack([position_distances(query[l], personalized[l]) for l in (1, 2)], dim=1)
    assert image_score(per_level).item() == pytest.approx(1.5)
    # the max is taken per level, then averaged; averaging the levels first (map 1, 0.5, 0.15) would give 1.0
    assert per_level.mean(dim=1).amax().item() == pytest.approx(1.0)


def test_s_n_takes_the_nearest_memory_entry_over_every_position_of_every_pool_image():
    pool = torch.tensor([[E2, [-1.0, 0.0]], [DIAGONAL, E2]])  # 2 images x 2 positions
    memory = build_memory(pool)
    assert memory.shape == (4, 2)
    query = tokens(E1, E2, [0.0, -1.0])
    # nearest to E1 is the diagonal (1 - sqrt(1/2)); E2 is in memory (0); (0, -1) is orthogonal to E1/-E1, 1 - cos = 1 at best
    expected = torch.tensor([[1 - math.sqrt(0.5), 0.0, 1.0]])
    torch.testing.assert_close(memory_distances(query, memory), expected)
    many = query.expand(20, -1, -1)  # more images than one memory chunk
    torch.testing.assert_close(memory_distances(many, memory), expected.expand(20, -1))


def test_s_text_is_the_anomalous_softmax_column_of_the_mapped_tokens_against_the_prompts():
    maps = TextMaps([3], width=2, text_width=2)
    with torch.no_grad():
        maps.maps["3"].weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        maps.maps["3"].bias.zero_()
    text = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # normal, anomalous (norms do not matter)
    query = tokens(E1, [1.0, 2.0])
    mapped = maps(query, 3)
    torch.testing.assert_close(mapped, tokens([2.0, 0.0], [2.0, 2.0]))
    probability = text_probabilities(mapped, text, temperature=0.5)
    # position 0: cosines (1, 0) -> logits (2, 0); position 1: (sqrt(1/2), sqrt(1/2)) -> equal logits
    expected = [math.exp(0) / (math.exp(2) + math.exp(0)), 0.5]
    torch.testing.assert_close(probability, torch.tensor([expected]))


def test_text_maps_round_trip_through_their_tensors():
    maps = TextMaps([6, 12], width=4, text_width=3)
    tensors = maps.tensors()
    assert sorted(tensors) == ["text_map.12.bias", "text_map.12.weight", "text_map.6.bias", "text_map.6.weight"]
    again = TextMaps.from_tensors(tensors)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(again(x, 12), maps(x, 12))
    with pytest.raises(ValueError, match="text_map"):
        TextMaps.from_tensors({})


def test_the_triplet_score_is_s_p_plus_alpha_s_n_plus_beta_s_text():
    gen = torch.Generator().manual_seed(0)
    query = {l: torch.randn(3, 4, 5, generator=gen) for l in (1, 2)}
    personalized = {l: torch.randn(3, 4, 5, generator=gen) for l in (1, 2)}
    memory = {l: build_memory(torch.randn(2, 4, 5, generator=gen)) for l in (1, 2)}
    maps, text = TextMaps([1, 2], 5, 3), torch.randn(2, 3, generator=gen)
    out = triplet_scores(query, personalized, memory, maps, text, 0.1)
    s_p = image_score(torch.stack([position_distances(query[l], personalized[l]) for l in (1, 2)], dim=1))
    s_n = image_score(torch.stack([memory_distances(query[l], memory[l]) for l in (1, 2)], dim=1))
    with torch.no_grad():
        s_text = image_score(torch.stack([text_probabilities(maps(query[l], l), text, 0.1) for l in (1, 2)], dim=1))
    for name, value in (("s_p", s_p), ("s_n", s_n), ("s_text", s_text)):
        torch.testing.assert_close(out.scores[name], value)
        assert out.maps[name].shape == (3, 4)
    torch.testing.assert_close(combine(out.scores, 1.0, 0.5), s_p + s_n + 0.5 * s_text)
    torch.testing.assert_close(combine(out.scores, 2.0, 0.5, ("s_n", "s_text")), 2 * s_n + 0.5 * s_text)


def test_the_focal_loss_of_the_text_score_matches_its_probability_form_and_survives_saturation():
    margins = torch.tensor([[[2.0, -1.0], [0.5, 0.0]], [[-3.0, -4.0], [-2.0, -5.0]]])  # 2 images, 2 levels, 2 positions
    labels = torch.tensor([1, 0])
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    scores = [(sigmoid(2.0) + sigmoid(0.5)) / 2, (sigmoid(-3.0) + sigmoid(-2.0)) / 2]  # mean over levels of the max position
    bce = [-math.log(scores[0]), -math.log(1 - scores[1])]
    focal = sum((1 - math.exp(-b)) ** 2 * b for b in bce) / 2  # p_t = exp(-bce)
    assert text_score_focal_loss(margins, labels, 2.0).item() == pytest.approx(focal, rel=1e-5)
    assert text_score_focal_loss(margins, labels, 0.0).item() == pytest.approx(sum(bce) / 2, rel=1e-5)
    # margins of +-300 (temperature 0.01) saturate float32 probabilities; the loss keeps its value and its gradient
    wrong = torch.tensor([[[-300.0]]], requires_grad=True)
    loss = text_score_focal_loss(wrong, torch.tensor([1]), 0.0)
    loss.backward()
    assert loss.item() == pytest.approx(300.0, rel=1e-4) and wrong.grad.item() == pytest.approx(-1.0)
