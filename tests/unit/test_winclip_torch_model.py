"""WinCLIP tensor maths: vectorised harmonic aggregation, memory scores, zero-/few-shot combination."""

import math

import pytest
import torch

from fsad.backbones.windows import window_patch_indices
from fsad.scorers.winclip.torch_model import (
    build_reference_memory,
    class_scores,
    harmonic_aggregation,
    visual_association_scores,
    winclip_scores,
    zero_shot_map,
)

from .feature_fixtures import random_features


def naive_harmonic_aggregation(window_scores, grid, window):
    """Patch by patch: harmonic mean over the windows that cover the patch (anomalib's definition)."""
    windows = window_patch_indices(grid, window)
    out = torch.zeros(window_scores.shape[0], grid * grid, dtype=window_scores.dtype)
    for patch in range(grid * grid):
        covering = (windows == patch).any(dim=1)
        out[:, patch] = covering.sum() / (1 / window_scores[:, covering]).sum(dim=1)
    return out.reshape(-1, grid, grid).nan_to_num(posinf=0.0)


@pytest.mark.parametrize("grid, window", [(7, 2), (7, 3), (15, 2), (15, 3), (5, 5), (4, 1)])
def test_vectorised_harmonic_aggregation_equals_a_loop_over_patches(grid, window):
    scores = torch.rand(3, (grid - window + 1) ** 2, dtype=torch.float64) + 0.01
    assert torch.allclose(harmonic_aggregation(scores, grid, window), naive_harmonic_aggregation(scores, grid, window))


def test_harmonic_aggregation_matches_anomalib_including_zero_scores():
    from anomalib.models.image.winclip.utils import harmonic_aggregation as anomalib_aggregation
    from anomalib.models.image.winclip.utils import make_masks

    scores = torch.rand(4, 36)
    scores[0, 5] = 0.0  # 1/0 = inf: every patch this window covers becomes 0 in anomalib
    ours = harmonic_aggregation(scores, 7, 2)
    theirs = anomalib_aggregation(scores, (7, 7), make_masks((7, 7), 2, 1))
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert (ours[0] == 0).sum() == 4


def test_harmonic_aggregation_of_the_docstring_example():
    scores = torch.tensor([[1.0, 0.75, 0.5, 0.25]])
    expected = torch.tensor([[1.0, 0.8571, 0.75], [0.6667, 0.48, 0.375], [0.5, 0.3333, 0.25]])
    assert torch.allclose(harmonic_aggregation(scores, 3, 2)[0], expected, atol=1e-4)


def test_harmonic_aggregation_rejects_a_wrong_window_count():
    with pytest.raises(ValueError, match="36 windows of side 2"):
        harmonic_aggregation(torch.rand(1, 35), 7, 2)


def test_class_scores_are_the_anomalous_softmax_probability_at_the_temperature():
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    embeddings = torch.tensor([[[5.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    scores = class_scores(embeddings, text, temperature=0.5)
    assert scores.shape == (1, 3)
    assert torch.allclose(scores[0], torch.tensor([torch.sigmoid(torch.tensor(-2.0)), torch.sigmoid(torch.tensor(2.0)), 0.5]))


def test_visual_association_score_is_half_the_cosine_distance_to_the_nearest_memory_entry():
    memory = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    embeddings = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [-1.0, -1.0]]])
    expected = torch.tensor([[0.0, (1 - 2**-0.5) / 2, 0.5, (1 + 2**-0.5) / 2]])
    assert torch.allclose(visual_association_scores(embeddings, memory), expected, atol=1e-6)


def test_zero_shot_map_is_the_harmonic_mean_of_image_and_window_scales():
    grid = 3
    image = torch.tensor([0.5])
    windows = {2: torch.full((1, 4), 0.25)}
    expected = 2 / (1 / 0.5 + 1 / 0.25)
    assert torch.allclose(zero_shot_map(image, windows, grid), torch.full((1, 3, 3), expected))


def test_a_test_image_equal_to_its_reference_has_zero_few_shot_maps():
    features = random_features(2)
    memory = build_reference_memory(features.select(["img0"]), [2, 3])
    out = winclip_scores(features, torch.randn(2, 6), [2, 3], memory=memory)
    assert set(out.sub_scores) == {"zero_shot", "memory_patch", "memory_w2", "memory_w3"}
    for name in ("memory_patch", "memory_w2", "memory_w3"):
        assert out.sub_scores[name][0].abs() < 1e-6 and out.sub_scores[name][1] > 0.01


def hand_windows(grid, k):
    """Patch indices of each window of side ``k``: windows row by row, patches row by row inside each."""
    return [[(row + i) * grid + col + j for i in range(k) for j in range(k)] for row in range(grid - k + 1) for col in range(grid - k + 1)]


def hand_harmonic(window_scores, grid, k):
    """Per patch, the number of windows covering it over the sum of their reciprocal scores."""
    windows = hand_windows(grid, k)
    return [len(covering) / sum(1 / window_scores[j] for j in covering)
            for covering in ([j for j, w in enumerate(windows) if p in w] for p in range(grid * grid))]


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def anomalous_probability(embedding, text, temperature):
    """Softmax over (normal, anomalous) cosines divided by the temperature: the anomalous class's share."""
    normal, anomalous = (math.exp(cos(embedding, t) / temperature) for t in text)
    return anomalous / (normal + anomalous)


def nearest_distance(vector, memory):
    return min((1 - cos(vector, entry)) / 2 for entry in memory)


def hand_winclip_plus(features, references, text, temperature, window_sizes=(2, 3)):
    """WinCLIP+ of every test image by hand, in float64: (image scores, grid maps, per-scale memory maxima)."""
    text = text.double()
    grid = features.grid
    scores, maps, maxima = [], [], []
    for i in range(len(features.image_ids)):
        zero = anomalous_probability(features.image_embeddings[i].double(), text, temperature)
        zero_scales = [[zero] * grid * grid]
        few_scales = {"patch": [nearest_distance(t.double(), references.patch_tokens.flatten(0, 1).double()) for t in features.patch_tokens[i]]}
        for k in window_sizes:
            windows = features.windows[k][i].double()
            zero_scales.append(hand_harmonic([anomalous_probability(w, text, temperature) for w in windows], grid, k))
            memory = references.windows[k].flatten(0, 1).double()
            few_scales[f"w{k}"] = hand_harmonic([nearest_distance(w, memory) for w in windows], grid, k)
        zero_map = [len(zero_scales) / sum(1 / scale[p] for scale in zero_scales) for p in range(grid * grid)]
        few_map = [sum(scale[p] for scale in few_scales.values()) / len(few_scales) for p in range(grid * grid)]
        scores.append((zero + max(few_map)) / 2)
        maps.append([(z + f) / 2 for z, f in zip(zero_map, few_map)])
        maxima.append({f"memory_{name}": max(scale) for name, scale in few_scales.items()})
    return torch.tensor(scores, dtype=torch.float64), torch.tensor(maps, dtype=torch.float64).reshape(-1, grid, grid), maxima


def test_few_shot_scores_maps_and_sub_scores_equal_a_hand_computation():
    features, references, text = random_features(3), random_features(2, seed=1), torch.randn(2, 6)
    memory = build_reference_memory(references, [2, 3])
    zero = winclip_scores(features, text, [2, 3], temperature=0.07)
    both = winclip_scores(features, text, [2, 3], temperature=0.07, memory=memory)
    assert set(zero.sub_scores) == {"zero_shot"}
    assert torch.equal(zero.image_scores, zero.sub_scores["zero_shot"])
    scores, maps, maxima = hand_winclip_plus(features, references, text, 0.07)
    torch.testing.assert_close(both.image_scores.double(), scores, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(both.maps.double(), maps, atol=1e-6, rtol=1e-5)
    for name in ("memory_patch", "memory_w2", "memory_w3"):
        torch.testing.assert_close(both.sub_scores[name].double(), torch.tensor([m[name] for m in maxima], dtype=torch.float64), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(both.sub_scores["zero_shot"], zero.image_scores)


def test_scores_of_a_batch_equal_scores_image_by_image():
    features = random_features(4)
    text = torch.randn(2, 6)
    memory = build_reference_memory(random_features(1, seed=3), [2, 3])
    batch = winclip_scores(features, text, [2, 3], memory=memory)
    for i, image_id in enumerate(features.image_ids):
        single = winclip_scores(features.select([image_id]), text, [2, 3], memory=memory)
        assert torch.allclose(batch.maps[i], single.maps[0], atol=1e-6)
