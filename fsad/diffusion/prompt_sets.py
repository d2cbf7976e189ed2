"""Named prompt sets of One-to-Normal's img2img stages (paper figure 5, table 5 and the appendix's prompt study).

A stage's ``prompts`` is a list of templates or one of these names; ``prompt_count`` keeps the first n of the set
(the appendix's study of 1, 3, 5 and 10 prompts). ``{}`` is the category's name, put in by
:func:`fsad.diffusion.config.prompt_text`.

- ``state``: figure 5(a)'s state-level descriptors "[o] without flaw / defect / damage", each as "a photo of normal
  [o] without ..." (the three prompts of section 4.3);
- ``physical``: figure 5(b)'s ten physical-level templates, with [c] the normal object ("a photo of a small normal
  [o]." ...; section 3.3's example is "a low-resolution photo of a normal object");
- ``empty``: table 5's "w/o text" read as no text: one empty prompt (the UNet is conditioned on the empty string,
  as classifier-free guidance's unconditional branch);
- ``instance``: table 5's "w/o text" read as no *designed* text: the one generic prompt, the generator's
  ``instance_prompt`` (DreamBooth's; what the pool used before the prompt set).
"""

from __future__ import annotations

STATE = ("a photo of normal {} without flaw", "a photo of normal {} without defect", "a photo of normal {} without damage")
PHYSICAL = (
    "a photo of a small normal {}.",
    "a photo of a large normal {}.",
    "a bright photo of a normal {}.",
    "a dark photo of a normal {}.",
    "a blurry photo of a normal {}.",
    "a bad photo of a normal {}.",
    "a good photo of a normal {}.",
    "a cropped photo of a normal {}.",
    "a close-up photo of a normal {}.",
    "a low resolution photo of a normal {}.",
)
EMPTY = ("",)
NAMED_SETS = ("state", "physical", "empty", "instance")


def prompt_templates(prompts: str | list[str], prompt_count: int | None, instance_prompt: str) -> list[str]:
    """The templates of a stage: ``prompts`` (a list, or a name of :data:`NAMED_SETS`), the first ``prompt_count``
    of them when given (all when None)."""
    if isinstance(prompts, str):
        named = {"state": STATE, "physical": PHYSICAL, "empty": EMPTY, "instance": (instance_prompt,)}
        if prompts not in named:
            raise ValueError(f"unknown prompt set {prompts!r}; use a list of prompts or one of {NAMED_SETS}")
        templates = list(named[prompts])
    else:
        templates = list(prompts)
    if prompt_count is not None:
        if prompt_count > len(templates):
            raise ValueError(f"prompt_count {prompt_count} exceeds the {len(templates)} prompts of set {prompts!r}; lower it or give more prompts")
        templates = templates[:prompt_count]
    return templates
