"""Readable object names for prompts, from dataset category names."""

from __future__ import annotations

# PromptAD's mapping (FuNz-0/PromptAD, ad_prompts.py::class_mapping): names CLIP's text encoder reads
# as the object, where the dataset's folder name is an abbreviation or a run-together word.
READABLE_NAMES: dict[str, str] = {
    "macaroni1": "macaroni",
    "macaroni2": "macaroni",
    "pcb1": "printed circuit board",
    "pcb2": "printed circuit board",
    "pcb3": "printed circuit board",
    "pcb4": "printed circuit board",
    "pipe_fryum": "pipe fryum",
    "chewinggum": "chewing gum",
    "metal_nut": "metal nut",
}

CLASS_NAME_MODES = ("readable", "verbatim")


def class_name(category: str, mode: str = "readable") -> str:
    """The object name used in prompts for ``category``.

    Args:
        category: the dataset's category name (``metal_nut``, ``pcb1``, ...).
        mode: ``"readable"`` maps known categories through :data:`READABLE_NAMES` and otherwise turns
            underscores into spaces; ``"verbatim"`` returns the category unchanged, as anomalib does.
    """
    if mode == "verbatim":
        return category
    if mode == "readable":
        return READABLE_NAMES.get(category, category.replace("_", " "))
    raise ValueError(f"unknown class_name_mode {mode!r}; use one of {CLASS_NAME_MODES} (scorer param class_name_mode)")


def configured_class_name(params: dict, category: str) -> str:
    """The prompt name of ``category`` under an instance's ``class_name_mode`` parameter (methods that declare it)."""
    return class_name(category, params["class_name_mode"])
