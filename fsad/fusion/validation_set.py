"""The labelled validation set on which a fusion's members are scored (PIL, numpy): built from validation normals only.

The anomalous-samples paper validates its weights on augmentations of the training images. A fusion of scorers has
no anomalous training image in general (settings such as ``k1``), so its validation set is made from the split's
validation normals alone, which no member saw as a reference and which are disjoint from the test images:

- the validation normals themselves (label 0; their features are in the category's feature store);
- ``normal_augmentations`` augmented copies of them (label 0; :func:`fsad.data.augment.augment`);
- ``anomalies`` synthetic defects pasted onto them (label 1; :func:`fsad.data.synthetic_defects.add_defect`, the
  types taking turns).

Both kinds of made images take turns over the validation normals and are seeded by ``derive_seed(seed, ...)`` with
the run's seed, so every member of one run scores the same images. Their ids are ``{normal id}#augment{i}`` and
``{normal id}#defect{i}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from fsad.data.augment import augment
from fsad.data.synthetic_defects import add_defect
from fsad.seeding import derive_seed


@dataclass
class ValidationImages:
    """The made images of a validation set (the real validation normals come from the feature store).

    Attributes:
        image_ids: ids of the made images, augmentations first, then defects.
        images: the RGB images, in that order.
        labels: ``(M,)`` 0 for augmentations, 1 for defects.
        sources: the validation normal each was made from.
        defect_types: ``""`` for augmentations, the defect type for defects.
    """

    image_ids: list[str]
    images: list[Image.Image]
    labels: np.ndarray
    sources: list[str]
    defect_types: list[str]


def made_validation_images(
    normals: dict[str, Image.Image], normal_augmentations: int, anomalies: int, defect_types: list[str], seed: int
) -> ValidationImages:
    """Augmentations and synthetic defects of the ``normals`` (id -> RGB image), taking turns over them."""
    if not normals:
        raise ValueError("a fusion's validation set needs at least one validation normal; use a setting with validation_normals >= 1")
    if anomalies < 1:
        raise ValueError("a fusion's validation set needs at least one synthetic anomaly to search weights on")
    ids = list(normals)
    made_ids, images, labels, sources, types = [], [], [], [], []
    for i in range(normal_augmentations):
        source = ids[i % len(ids)]
        image, _ = augment(normals[source], None, 1, derive_seed(seed, "fusion_validation", "augment", i))[0]
        made_ids.append(f"{source}#augment{i}"), images.append(image), labels.append(0), sources.append(source), types.append("")
    rng = np.random.default_rng(derive_seed(seed, "fusion_validation", "defects"))
    for i in range(anomalies):
        source = ids[i % len(ids)]
        base = np.asarray(normals[source].convert("RGB"))
        donor = np.asarray(normals[ids[(i + 1) % len(ids)]].convert("RGB").resize(normals[source].size))
        defect = add_defect(base, defect_types[i % len(defect_types)], rng, donor)
        made_ids.append(f"{source}#defect{i}"), images.append(Image.fromarray(defect.image)), labels.append(1)
        sources.append(source), types.append(defect.defect_type)
    return ValidationImages(made_ids, images, np.array(labels, dtype=int), sources, types)
