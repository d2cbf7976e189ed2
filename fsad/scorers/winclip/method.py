"""The ``winclip`` method declaration (parameters in ``schema.yaml``)."""

from pathlib import Path

from fsad.scorers.method import FeatureNeeds, Method, generator_pool
from fsad.text.class_names import configured_class_name

METHOD = Method(
    name="winclip",
    prompt_class_name=configured_class_name,
    score="fsad.scorers.winclip.scorer:score",
    schema=Path(__file__).with_name("schema.yaml"),
    features=lambda params: FeatureNeeds(window_sizes=tuple(params["window_sizes"])),
    generated=generator_pool,
)
