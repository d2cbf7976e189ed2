"""A generator's config entry: validated against ``schema.yaml`` with defaults filled in, split per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad.scorers.method import Params

SCHEMA = Path(__file__).with_name("schema.yaml")
# The sections of a generator entry, one per stage; every other key is read by every stage.
STAGES = ("class_images", "dreambooth", "pool", "personalization")


def generator_params(spec: dict[str, Any], where: str) -> Params:
    """``spec`` (a ``generators:`` entry) checked against the schema, defaults filled in (a copy)."""
    import copy

    from fsad.scorers.registry import validated

    params = validated(SCHEMA, copy.deepcopy(spec), where, "generator")
    if params["pool"]["text_to_image"] + params["pool"]["image_to_image"] == 0:
        raise ValueError(f"config: {where}.pool generates no image; set pool.text_to_image or pool.image_to_image above 0")
    return params


def stage_params(params: Params, stage: str) -> Params:
    """What one stage's jobs receive: the shared keys and the stage's own section (under its name)."""
    if stage not in STAGES:
        raise ValueError(f"unknown generator stage {stage!r}; one of {STAGES}")
    shared = {key: value for key, value in params.items() if key not in STAGES}
    return {**shared, stage: params[stage]}


def prompt_text(template: str, category: str, class_name_mode: str) -> str:
    """A prompt template with the category's name put in (``"a photo of normal {}"`` -> ``"a photo of normal metal nut"``)."""
    from fsad.text.class_names import class_name

    return template.format(class_name(category, class_name_mode))
