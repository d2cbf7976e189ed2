"""Joint augmentations: reproducible from the seed, the mask follows the image, no black fill enters the image."""

import numpy as np
import torch
from PIL import Image

from fsad.data.augment import augment


def square_image_and_mask():
    pixels = np.zeros((64, 80, 3), dtype=np.uint8)
    mask = np.zeros((64, 80), dtype=np.uint8)
    pixels[10:30, 40:70] = 255
    mask[10:30, 40:70] = 255
    return Image.fromarray(pixels), Image.fromarray(mask)


def test_same_seed_gives_the_same_images_and_another_seed_other_ones():
    image, mask = square_image_and_mask()
    first, again, other = augment(image, mask, 4, seed=5), augment(image, mask, 4, seed=5), augment(image, mask, 4, seed=6)
    assert all(np.array_equal(np.array(a[0]), np.array(b[0])) and np.array_equal(np.array(a[1]), np.array(b[1])) for a, b in zip(first, again))
    assert any(not np.array_equal(np.array(a[0]), np.array(b[0])) for a, b in zip(first, other))


def test_the_mask_follows_the_image_and_stays_binary():
    image, mask = square_image_and_mask()
    for new_image, new_mask in augment(image, mask, 8, seed=0):
        bright = np.array(new_image)[..., 0] > 127
        defect = np.array(new_mask) > 0
        assert set(np.unique(np.array(new_mask))) <= {0, 255}
        assert new_image.size == image.size and new_mask.size == image.size
        overlap = (bright & defect).sum() / max((bright | defect).sum(), 1)
        assert overlap > 0.8


def test_images_without_mask_and_the_global_random_state():
    image, _ = square_image_and_mask()
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    out = augment(image, None, 3, seed=0)
    assert torch.equal(torch.rand(1), expected)
    assert len(out) == 3 and all(m is None and im.mode == "RGB" for im, m in out)


def test_a_constant_colour_image_stays_that_colour_so_no_black_corners_appear():
    colour = (200, 120, 40)
    image = Image.fromarray(np.full((64, 80, 3), colour, dtype=np.uint8))
    mask = np.zeros((64, 80), dtype=np.uint8)
    mask[20:40, 30:50] = 255
    for seed in range(6):
        for new_image, new_mask in augment(image, Image.fromarray(mask), 8, seed=seed):
            pixels = np.array(new_image)
            assert not (pixels == 0).all(axis=-1).any()
            assert (pixels == colour).all()
            assert np.array(new_mask).any()


def test_a_defect_at_the_border_is_mirrored_in_the_image_and_the_mask_alike():
    pixels = np.full((64, 80, 3), 90, dtype=np.uint8)
    pixels[..., 2] = np.linspace(0, 120, 80, dtype=np.uint8)[None, :]  # a gradient, so the background is not uniform
    mask = np.zeros((64, 80), dtype=np.uint8)
    pixels[20:44, 64:80] = (255, 0, 0)
    mask[20:44, 64:80] = 255
    for new_image, new_mask in augment(Image.fromarray(pixels), Image.fromarray(mask), 16, seed=2):
        red = np.array(new_image)[..., 0] > 170
        defect = np.array(new_mask) > 0
        assert (red & defect).sum() / max((red | defect).sum(), 1) > 0.8
