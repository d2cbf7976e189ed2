"""A generator's config entry: validated against ``schema.yaml`` with defaults filled in, split per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad.config import Params, validated

SCHEMA = Path(__file__).with_name("schema.yaml")
# The sections of a generator entry, one per stage; every other key is read by every stage.
STAGES = ("class_images", "dreambooth", "pool", "personalization")
# Keys of each section that say how fast or how verbosely, not what: no job receives them as params (changing them
# reruns nothing); the job reads them from the config (:func:`job_params`). Images per pipeline call change the last
# float bits of a generated image on the CPU (batched kernels sum in another order): class images and pools are
# reproducible at a fixed batch size, and within one 8-bit level in a few pixels across batch sizes. Gradient
# checkpointing recomputes the same activations. Personalization has no batch size: each test image's candidates are
# one pipeline call (fsad.diffusion.personalize), so a test image's result never depends on the others.
RUN_SETTINGS = {"class_images": ("batch_size",), "dreambooth": ("log_every", "gradient_checkpointing"), "pool": ("batch_size",), "personalization": ()}
# DreamBooth keys that only the other training mode reads: a DreamBooth job does not receive them, so changing the LoRA
# learning rate or rank never reruns a full fine-tune, nor the full fine-tune's learning rate a LoRA training.
OTHER_MODE_KEYS = {"full": ("lora_learning_rate", "lora_rank"), "lora": ("learning_rate",)}


def generator_params(spec: dict[str, Any], where: str) -> Params:
    """``spec`` (a ``generators:`` entry) checked against the schema, defaults filled in (a copy)."""
    import copy

    params = validated(SCHEMA, copy.deepcopy(spec), where, "generator")
    if params["pool"]["text_to_image"] + params["pool"]["image_to_image"] == 0:
        raise ValueError(f"config: {where}.pool generates no image; set pool.text_to_image or pool.image_to_image above 0")
    for section in ("pool", "personalization"):
        try:
            stage_prompts(params, section)
        except ValueError as error:
            raise ValueError(f"config: {where}.{section}: {error}") from None
    return params


def stage_prompts(params: Params, section: str) -> list[str]:
    """The prompt templates of an img2img section (``pool`` or ``personalization``): its ``prompts`` (a list or a named
    set of :mod:`fsad.diffusion.prompt_sets`), cut to its ``prompt_count``."""
    from fsad.diffusion.prompt_sets import prompt_templates

    return prompt_templates(params[section]["prompts"], params[section]["prompt_count"], params["instance_prompt"])


# Shared keys that wire jobs together rather than change an image: no stage receives them.
WIRING_KEYS = ("models_from",)
# The stages whose outputs a generator with models_from reads from the other generator.
SHARED_STAGES = ("class_images", "dreambooth", "pool")


def check_models_from(generators: dict[str, Params]) -> None:
    """Each ``models_from`` names another generator without one of its own, equal in every key but personalization."""
    for name, params in generators.items():
        source = params["models_from"]
        if source is None:
            continue
        where = f"config: generators.{name}.models_from"
        if source not in generators or source == name:
            raise ValueError(f"{where} is {source!r}; name another generator of the config: {sorted(set(generators) - {name})}")
        if generators[source]["models_from"] is not None:
            raise ValueError(f"{where} names {source!r}, which reads another's models itself; name {generators[source]['models_from']!r}")
        differing = sorted(k for k in params if k not in ("personalization", *WIRING_KEYS) and params[k] != generators[source][k])
        if differing:
            raise ValueError(f"{where}: {name!r} and {source!r} differ in {differing}; only personalization may differ (or drop models_from)")


def models_owner(generators: dict[str, Params], generator: str) -> str:
    """The generator whose class images, DreamBooth models and pools ``generator`` reads: its ``models_from`` or itself."""
    return generators[generator]["models_from"] or generator


def stage_params(params: Params, stage: str) -> Params:
    """What one stage's jobs receive as params: the shared keys and the stage's own section (under its name), less
    its run settings (:data:`RUN_SETTINGS`) and, for DreamBooth, the keys of the other training mode (:data:`OTHER_MODE_KEYS`)."""
    if stage not in STAGES:
        raise ValueError(f"unknown generator stage {stage!r}; one of {STAGES}")
    shared = {key: value for key, value in params.items() if key not in STAGES and key not in WIRING_KEYS}
    left_out = set(RUN_SETTINGS[stage]) | (set(OTHER_MODE_KEYS[params[stage]["training"]]) if stage == "dreambooth" else set())
    return {**shared, stage: {key: value for key, value in params[stage].items() if key not in left_out}}


def job_params(rule_params: Params, config: dict[str, Any], generator: str, stage: str) -> Params:
    """A stage job's parameters: its rule's params (:func:`stage_params`) with the stage's run settings from the
    workflow ``config`` (defaults filled in)."""
    full = generator_params(config["generators"][generator], f"generators.{generator}")
    return {**rule_params, stage: {**rule_params[stage], **{key: full[stage][key] for key in RUN_SETTINGS[stage]}}}


def prompt_text(template: str, category: str, class_name_mode: str) -> str:
    """A prompt template with the category's name put in (``"a photo of normal {}"`` -> ``"a photo of normal metal nut"``)."""
    from fsad.text.class_names import class_name

    return template.format(class_name(category, class_name_mode))
