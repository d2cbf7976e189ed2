"""PatchCore's formulas on hand-made tensors: nearest-patch distances, the reweighted image score, the coreset, the
locally aware features and the map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from fsad.features.types import FeatureBatch
from fsad.scorers.nearest import nearest, pairwise_distances
from fsad.scorers.patchcore.torch_model import (
    anomalib_embedding,
    anomaly_maps,
    greedy_coreset,
    original_embedding,
    patch_embeddings,
    patch_scores,
    projection_dim,
    reweighted_scores,
)


def test_each_patch_scores_its_euclidean_distance_to_the_nearest_bank_entry():
    bank = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    patches = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [0.0, 4.0]]])  # nearest: entry 0 at 1, entry 1 or 2 at 3 / 4, entry 2 at 0
    scores, index = patch_scores(patches, bank)
    torch.testing.assert_close(scores, torch.tensor([[1.0, 3.0, 0.0]]))
    assert index.tolist() == [[0, 2, 2]]


def test_nearest_returns_the_k_closest_in_order_and_chunks_give_the_same_answer(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    queries, memory = torch.randn(50, 6, generator=generator), torch.randn(40, 6, generator=generator)
    values, indices = nearest(queries, memory, k=3)
    exact = torch.cdist(queries.double(), memory.double())
    torch.testing.assert_close(values.double(), exact.sort(dim=1).values[:, :3], atol=1e-5, rtol=1e-5)
    assert torch.equal(indices, exact.argsort(dim=1)[:, :3])
    import fsad.scorers.nearest as module

    monkeypatch.setattr(module, "BLOCK_ENTRIES", 40 * 7)  # blocks of 7 queries
    chunked = nearest(queries, memory, k=3)
    assert torch.equal(chunked[1], indices) and torch.allclose(chunked[0], values)
    cosine, _ = nearest(queries, memory, k=1, metric="cosine")
    unit = lambda t: t / t.norm(dim=1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(cosine[:, 0], 1 - (unit(queries) @ unit(memory).T).max(dim=1).values)


def test_the_reweighting_takes_one_minus_the_softmax_weight_of_m_star_among_its_neighbours():
    # one image of two patches; the worst patch is the second (distance 2 to its nearest entry m* = [2, 0])
    bank = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 1.0], [5.0, 0.0]])
    patches = torch.tensor([[[0.1, 0.0], [4.0, 0.0]]])
    scores, index = patch_scores(patches, bank)
    assert index[0, 1] == 3  # [4, 0] is 1 from [5, 0]: m* is entry 3
    assert float(scores[0, 1]) == pytest.approx(1.0)
    # m* = [5, 0]; its two nearest bank entries: itself, then [2, 0] (3) or [2, 1] (sqrt 10): itself and [2, 0]
    # distances of the worst patch [4, 0] to them: 1 and 2
    weight = 1 - math.exp(1) / (math.exp(1) + math.exp(2))
    assert float(reweighted_scores(scores, index, patches, bank, neighbours=2)[0]) == pytest.approx(weight * 1.0, rel=1e-6)
    # with three neighbours [2, 1] joins: distance sqrt(5)
    weight3 = 1 - math.exp(1) / (math.exp(1) + math.exp(2) + math.exp(math.sqrt(5)))
    assert float(reweighted_scores(scores, index, patches, bank, neighbours=3)[0]) == pytest.approx(weight3, rel=1e-6)
    # more neighbours than entries: all of them
    weight4 = 1 - math.exp(1) / (math.exp(1) + math.exp(2) + math.exp(math.sqrt(5)) + math.exp(4))
    assert float(reweighted_scores(scores, index, patches, bank, neighbours=9)[0]) == pytest.approx(weight4, rel=1e-6)


def test_the_greedy_coreset_adds_the_point_farthest_from_every_centre_chosen():
    # four clusters far apart, five points each: a coreset of four takes one point of each cluster
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    points = (centres[:, None] + torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(1))).reshape(20, 2)
    chosen = greedy_coreset(points, ratio=0.2, seed=3)
    assert len(chosen) == 4 and sorted((chosen // 5).tolist()) == [0, 1, 2, 3]
    # each pick after the first is the farthest point from the ones before it
    for step in range(1, 4):
        distance = torch.cdist(points, points[chosen[:step]]).min(dim=1).values
        assert distance[chosen[step]] == distance.max()
    assert torch.equal(greedy_coreset(points, 0.2, seed=3), chosen)
    assert len(greedy_coreset(points, 0.01, seed=0)) == 1


def test_the_coreset_projects_only_when_the_johnson_lindenstrauss_dimension_is_smaller():
    # anomalib's eps = 0.9: 4 ln(n) / (0.9^2 / 2 - 0.9^3 / 3)
    assert projection_dim(1000) == int(4 * math.log(1000) / (0.405 - 0.243))
    wide = torch.randn(200, 1000, generator=torch.Generator().manual_seed(0))
    chosen = greedy_coreset(wide, 0.1, seed=0)
    assert len(chosen) == 20 and len(set(chosen.tolist())) == 20


def test_locally_aware_features_are_3x3_means_with_the_coarser_stage_upsampled_and_concatenated():
    fine = torch.zeros(1, 1, 4, 4)
    fine[0, 0, 1, 1] = 9.0
    coarse = torch.arange(4.0).reshape(1, 1, 2, 2)
    out = anomalib_embedding([fine, coarse])
    assert out.shape == (1, 2, 4, 4)
    # the spike spreads as 1 over its 3x3 neighbourhood (zero padding counted: the corner mean is 9 / 9 as well)
    expected = torch.zeros(4, 4)
    expected[0:3, 0:3] = 1.0
    torch.testing.assert_close(out[0, 0], expected)
    # the coarse stage: 3x3 means of [[0, 1], [2, 3]] are all 6 / 9, upsampled bilinearly: constant
    torch.testing.assert_close(out[0, 1], torch.full((4, 4), 6 / 9))


def test_the_original_projection_pools_each_stages_neighbourhoods_to_1024_then_the_stages_together():
    generator = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 8, 4, 4, generator=generator), torch.randn(2, 16, 2, 2, generator=generator)]
    out = original_embedding(maps, dim=1024)
    assert out.shape == (2, 1024, 4, 4)
    # constant maps give constant neighbourhoods away from the zero padding: an inner position's entries are that constant
    flat = original_embedding([torch.full((1, 8, 4, 4), 2.0), torch.full((1, 16, 4, 4), 2.0)], dim=1024)
    torch.testing.assert_close(flat[0, :, 1, 1], torch.full((1024,), 2.0))
    # layer sizes of wide_resnet50_2: 512 * 9 and 1024 * 9 values per position both become 1024, then 2048 -> 1024
    assert original_embedding([torch.randn(1, 512, 4, 4), torch.randn(1, 1024, 2, 2)]).shape == (1, 1024, 4, 4)


def test_patch_embeddings_read_the_stores_row_major_stage_maps():
    maps = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    batch = FeatureBatch(["a", "b"], torch.zeros(2, 1), torch.zeros(2, 1, 1), {}, 1, layers={2: maps[0].flatten(2).transpose(1, 2), 3: maps[1].flatten(2).transpose(1, 2)})
    rows, grid = patch_embeddings(batch, [2, 3])
    assert grid == 4 and rows.shape == (2, 16, 8)
    torch.testing.assert_close(rows, anomalib_embedding(maps).flatten(2).transpose(1, 2))


def test_the_map_is_nearest_upsampling_then_a_gaussian_with_mirrored_borders():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])  # a 2x2 grid
    maps = anomaly_maps(scores, grid=2, input_size=64, sigma=4.0)
    blocks = np.kron(np.array([[0.0, 1.0], [2.0, 3.0]]), np.ones((32, 32)))
    # scipy's 'mirror' is torch's 'reflect' (the edge pixel not repeated); radius int(4 * 4 + 0.5) = 16
    expected = ndimage.gaussian_filter(blocks, sigma=4.0, mode="mirror", truncate=4.0)
    np.testing.assert_allclose(maps[0].numpy(), expected, atol=1e-5)
    assert torch.equal(anomaly_maps(scores, 2, 64, sigma=0.0)[0], torch.from_numpy(blocks).float())


def test_pairwise_euclidean_distances_use_the_expanded_form_clamped_at_zero():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    torch.testing.assert_close(pairwise_distances(x, x), torch.cdist(x, x), atol=1e-3, rtol=0)
    assert (pairwise_distances(x, x).diagonal() >= 0).all()
