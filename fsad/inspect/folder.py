"""The new images of an inspection: the files of one folder, their ids, and which of them can be read."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fsad.data.images import read_image
from fsad.data.manifest import make_image_id

# Files the listing skips: hidden files (``.DS_Store``) and the sidecars of a copy in progress.
HIDDEN_PREFIX = "."


def folder_files(folder: str | Path) -> list[Path]:
    """The regular, non-hidden files directly in ``folder`` (not its subfolders), sorted by name.

    Raises:
        FileNotFoundError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: the inspect folder does not exist; set inspect.<name>.images to a folder of images")
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith(HIDDEN_PREFIX))


def inspect_image_id(path: Path) -> str:
    """A store key of the file: its name and the first 12 hex digits of its content's SHA-1, so that an edited file
    under the same name is encoded again instead of reusing the old features."""
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    return make_image_id(path.name, digest)


def readable_images(files: list[Path]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Split ``files`` into the images that decode (id -> absolute path, in file order) and the others.

    Returns:
        the readable images, and one ``{"file", "reason"}`` row per file that cannot be read (the reader's message).
    """
    images: dict[str, str] = {}
    unreadable: list[dict[str, str]] = []
    for path in files:
        try:
            read_image(path)
        except (ValueError, FileNotFoundError) as err:
            unreadable.append({"file": str(path.resolve()), "reason": str(err)})
            continue
        images[inspect_image_id(path)] = str(path.resolve())
    return images, unreadable
