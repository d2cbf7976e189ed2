"""FeatureBatch: rows, devices and the config hint for features a scorer needs but the cache lacks."""

from __future__ import annotations

import pytest
import torch

from fsad.features.types import FeatureBatch

from .feature_fixtures import random_features


def with_taps(n: int = 3) -> FeatureBatch:
    features = random_features(n)
    features.layers = {6: torch.arange(n, dtype=torch.float32).reshape(n, 1, 1).expand(n, 25, 8).clone()}
    features.vv_layers = {24: -features.layers[6]}
    return features


def test_select_takes_the_same_rows_of_layers_and_vv_layers():
    picked = with_taps().select(["img2", "img0"])
    assert picked.image_ids == ["img2", "img0"]
    assert picked.layers[6][:, 0, 0].tolist() == [2.0, 0.0] and picked.vv_layers[24][:, 0, 0].tolist() == [-2.0, -0.0]


def test_to_moves_and_casts_layers_and_vv_layers():
    moved = with_taps().to("cpu", torch.float64)
    assert moved.layers[6].dtype == torch.float64 and moved.vv_layers[24].dtype == torch.float64
    assert moved.windows[2].dtype == torch.float64


@pytest.mark.parametrize(
    "asked, message",
    [
        ({"window_sizes": [2, 7]}, r"^scorers\.demo asks for window sizes \[7\].*backbone's window_sizes .*parameters of scorers\.demo "),
        ({"layers": [6, 12]}, r"^scorers\.demo asks for layers \[12\].*has \[6\].*backbone's layers in the config.*parameters of scorers\.demo "),
        ({"vv_layers": [18]}, r"^scorers\.demo asks for V-V layers \[18\].*backbone's vv_layers in the config"),
    ],
)
def test_require_names_the_missing_features_and_the_config_key(asked, message):
    features = with_taps().read_by("scorers.demo")
    features.require(window_sizes=[2, 3], layers=[6], vv_layers=[24])
    with pytest.raises(ValueError, match=message):
        features.require(**asked)


def test_concat_joins_rows_in_order_with_the_parts_every_batch_holds():
    first, second = with_taps(3), random_features(2)
    second.image_ids = ["g0", "g1"]
    joined = FeatureBatch.concat([first.read_by("scorers.x"), second])
    assert joined.image_ids == ["img0", "img1", "img2", "g0", "g1"] and joined.reader == "scorers.x"
    torch.testing.assert_close(joined.patch_tokens, torch.cat([first.patch_tokens, second.patch_tokens]))
    torch.testing.assert_close(joined.windows[2], torch.cat([first.windows[2], second.windows[2]]))
    assert set(joined.windows) == set(first.windows) & set(second.windows)
    assert joined.layers == {} and joined.vv_layers == {}  # only the first holds taps
    first.mid_layers, second.mid_layers = {4: torch.randn(3, 4, 5)}, {4: torch.randn(2, 4, 5), 9: torch.randn(2, 4, 5)}
    joined = FeatureBatch.concat([first.read_by("scorers.x"), second])
    assert set(joined.mid_layers) == {4} and joined.reader == "scorers.x"
    torch.testing.assert_close(joined.mid_layers[4], torch.cat([first.mid_layers[4], second.mid_layers[4]]))
    assert FeatureBatch.concat([first]) is first
    second.grid = first.grid + 1
    with pytest.raises(ValueError, match="patch grids"):
        FeatureBatch.concat([first, second])
