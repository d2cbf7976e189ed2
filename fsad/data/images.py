"""Reading dataset images with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError


def read_image(path: str | Path) -> Image.Image:
    """Open an image fully (so a truncated file fails here), naming the file when it cannot be read."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found; rerun prepare_dataset for its dataset") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: corrupt or unreadable image ({err}); replace the file or remove it from the dataset") from err
