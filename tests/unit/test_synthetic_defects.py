"""Procedural defects: exact masks, determinism, varied sizes, clear errors."""

import numpy as np
import pytest

from fsad.data.synthetic_defects import DEFECT_TYPES, add_defect, changed_pixels, load_rgb, save_png


def textured(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(90, 170, size=(size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_mask_is_exactly_the_changed_pixels_and_never_empty(defect_type):
    image, donor = textured(0), textured(1)
    for seed in range(5):
        defect = add_defect(image, defect_type, np.random.default_rng(seed), donor)
        assert defect.image.dtype == np.uint8 and defect.image.shape == image.shape
        assert defect.mask.any()
        np.testing.assert_array_equal(defect.mask, changed_pixels(image, defect.image))


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_same_generator_seed_gives_the_same_defect(defect_type):
    image, donor = textured(0), textured(1)
    first = add_defect(image, defect_type, np.random.default_rng(7), donor)
    again = add_defect(image, defect_type, np.random.default_rng(7), donor)
    other = add_defect(image, defect_type, np.random.default_rng(8), donor)
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)


def test_the_input_image_is_left_untouched():
    image = textured(0)
    before = image.copy()
    for defect_type in DEFECT_TYPES:
        add_defect(image, defect_type, np.random.default_rng(0), textured(1))
    np.testing.assert_array_equal(image, before)


def test_defect_sizes_range_from_tiny_to_large():
    image, donor = textured(0, size=96), textured(1, size=96)
    coverage = [
        add_defect(image, defect_type, np.random.default_rng(seed), donor).mask.mean()
        for defect_type in ("spot", "cutpaste")
        for seed in range(20)
    ]
    assert min(coverage) < 0.005 and max(coverage) > 0.04


def test_cutpaste_without_a_donor_and_unknown_types_fail_clearly():
    with pytest.raises(ValueError, match="donor"):
        add_defect(textured(0), "cutpaste", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown defect type 'crack'"):
        add_defect(textured(0), "crack", np.random.default_rng(0))


def test_png_round_trip_keeps_images_and_masks_exact(tmp_path):
    defect = add_defect(textured(0), "spot", np.random.default_rng(0))
    save_png(defect.image, tmp_path / "image.png")
    save_png(defect.mask, tmp_path / "mask.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "image.png", 64), defect.image)
    mask = load_rgb(tmp_path / "mask.png", 64)[..., 0]
    assert set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask > 0, defect.mask)


def test_unreadable_image_names_the_file(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_rgb(broken, 32)
