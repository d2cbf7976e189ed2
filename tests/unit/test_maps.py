"""fsad.maps: square patch grids, bilinear upsampling, Gaussian smoothing and the numpy arrays of score steps."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from fsad.maps import concat_numpy, smooth, square_grid, upsample


def test_upsample_maps_keeps_constant_maps_constant():
    maps = torch.full((2, 5, 5), 0.3)
    up = upsample(maps, 40)
    assert up.shape == (2, 40, 40) and torch.allclose(up, torch.full_like(up, 0.3))


def test_upsample_is_torchs_bilinear_without_aligned_corners_for_grids_with_and_without_channels():
    maps = torch.rand(3, 2, 7, 7, dtype=torch.float64)
    expected = torch.nn.functional.interpolate(maps.float(), size=(28, 28), mode="bilinear", align_corners=False)
    assert torch.equal(upsample(maps, 28), expected)
    single = upsample(maps[:, 0], 28)
    assert single.dtype == torch.float32 and torch.equal(single, expected[:, 0])


def test_square_grid_puts_the_row_major_patches_of_each_channel_on_the_grid():
    values = torch.arange(2 * 9 * 2, dtype=torch.float32).reshape(2, 9, 2)
    grid = square_grid(values)
    assert grid.shape == (2, 2, 3, 3)
    assert torch.equal(grid[1, 0, 2, 1], values[1, 7, 0]) and torch.equal(grid[0, 1, 0, 2], values[0, 2, 1])
    with pytest.raises(ValueError, match="8 patch tokens do not form a square grid"):
        square_grid(torch.zeros(1, 8, 1))


def test_smoothing_filters_each_map_alone_and_sigma_zero_or_no_maps_leave_them():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 20, 20)).astype(np.float32)
    smoothed = smooth(maps, 2.5)
    assert smoothed.dtype == np.float32
    for m, s in zip(maps, smoothed):
        np.testing.assert_array_equal(s, gaussian_filter(m, sigma=2.5))
    assert smooth(maps, 0) is maps
    empty = np.zeros((0, 20, 20), np.float32)
    assert smooth(empty, 2.5) is empty


def test_concat_numpy_joins_batches_in_order_as_float32():
    parts = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0])]
    joined = concat_numpy(parts)
    assert joined.dtype == np.float32 and joined.tolist() == [1.0, 2.0, 3.0]
