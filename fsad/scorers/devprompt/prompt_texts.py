"""Prompt texts of PromptAD and DevPrompt, with placeholder tokens where the learnable context goes.

Source: FuNz-0/PromptAD ``PromptAD/ad_prompts.py`` (``state_anomaly``, ``class_state_abnormal``) and
``PromptAD/model.py::PromptLearner`` (placeholder words stand in for the context vectors, so the tokenizer
reserves their positions; the learner swaps in the vectors after the token embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

from fsad.text.learned_prompts import PLACEHOLDER

# PromptAD's generic anomaly states (``state_anomaly``).
PROMPTAD_ABNORMAL_STATES = (
    "damaged {}",
    "flawed {}",
    "abnormal {}",
    "imperfect {}",
    "blemished {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)

# PromptAD's per-category defect phrases (``class_state_abnormal``), keyed by dataset folder name.
CLASS_ABNORMAL_STATES: dict[str, tuple[str, ...]] = {
    "bottle": ("{} with large breakage", "{} with small breakage", "{} with contamination"),
    "toothbrush": ("{} with defect", "{} with anomaly"),
    "carpet": ("{} with hole", "{} with color stain", "{} with metal contamination", "{} with thread residue", "{} with thread", "{} with cut"),
    "hazelnut": ("{} with crack", "{} with cut", "{} with hole", "{} with print"),
    "leather": ("{} with color stain", "{} with cut", "{} with fold", "{} with glue", "{} with poke"),
    "cable": ("{} with bent wire", "{} with missing part", "{} with missing wire", "{} with cut", "{} with poke"),
    "capsule": ("{} with crack", "{} with faulty imprint", "{} with poke", "{} with scratch", "{} squeezed with compression"),
    "grid": ("{} with breakage", "{} with thread residue", "{} with thread", "{} with metal contamination", "{} with glue", "{} with a bent shape"),
    "pill": ("{} with color stain", "{} with contamination", "{} with crack", "{} with faulty imprint", "{} with scratch", "{} with abnormal type"),
    "transistor": ("{} with bent lead", "{} with cut lead", "{} with damage", "{} with misplaced transistor"),
    "metal_nut": ("{} with a bent shape", "{} with color stain", "{} with a flipped orientation", "{} with scratch"),
    "screw": ("{} with manipulated front", "{} with scratch neck", "{} with scratch head"),
    "zipper": ("{} with broken teeth", "{} with fabric border", "{} with defect fabric", "{} with broken fabric", "{} with split teeth",
               "{} with squeezed teeth"),
    "tile": ("{} with crack", "{} with glue strip", "{} with gray stroke", "{} with oil", "{} with rough surface"),
    "wood": ("{} with color stain", "{} with hole", "{} with scratch", "{} with liquid"),
    "candle": ("{} with melded wax", "{} with foreign particals", "{} with extra wax", "{} with chunk of wax missing", "{} with weird candle wick",
               "{} with damaged corner of packaging", "{} with different colour spot"),
    "capsules": ("{} with scratch", "{} with discolor", "{} with misshape", "{} with leak", "{} with bubble"),
    "cashew": ("{} with breakage", "{} with small scratches", "{} with burnt", "{} with stuck together", "{} with spot"),
    "chewinggum": ("{} with corner missing", "{} with scratches", "{} with chunk of gum missing", "{} with colour spot", "{} with cracks"),
    "fryum": ("{} with breakage", "{} with scratches", "{} with burnt", "{} with colour spot", "{} with fryum stuck together", "{} with colour spot"),
    "macaroni1": ("{} with color spot", "{} with small chip around edge", "{} with small scratches", "{} with breakage", "{} with cracks"),
    "macaroni2": ("{} with color spot", "{} with small chip around edge", "{} with small scratches", "{} with breakage", "{} with cracks"),
    "pcb1": ("{} with bent", "{} with scratch", "{} with missing", "{} with melt"),
    "pcb2": ("{} with bent", "{} with scratch", "{} with missing", "{} with melt"),
    "pcb3": ("{} with bent", "{} with scratch", "{} with missing", "{} with melt"),
    "pcb4": ("{} with scratch", "{} with extra", "{} with missing", "{} with wrong place", "{} with damage", "{} with burnt", "{} with dirt"),
    "pipe_fryum": ("{} with breakage", "{} with small scratches", "{} with burnt", "{} with stuck together", "{} with colour spot", "{} with cracks"),
}

# Words that hold the places of the context vectors; each is one BPE token of CLIP's tokenizer.
NORMAL_PLACEHOLDER = PLACEHOLDER
ABNORMAL_PLACEHOLDER = "Y"


@dataclass(frozen=True)
class PromptTexts:
    """The prompts of one class, context places written as placeholder words.

    Attributes:
        normal: ``n_prompts`` normal prompts ``"X X X X normal bottle."`` (one per set of context vectors).
        handcrafted: one prompt per (abnormal state, context set), state-major: ``"X X X X damaged bottle."``.
        learned: one prompt per (learned abnormal context, normal context set), abnormal-major:
            ``"X X X X Y bottle."``.
    """

    normal: list[str]
    handcrafted: list[str]
    learned: list[str]


def abnormal_states(states: list[str], category: str, class_states: bool) -> list[str]:
    """``states`` followed, when ``class_states``, by PromptAD's phrases of ``category`` (none for unknown categories)."""
    extra = CLASS_ABNORMAL_STATES.get(category, ()) if class_states else ()
    return [*states, *extra]


def prompt_texts(
    class_name: str,
    normal_states: list[str],
    abnormal_state_list: list[str],
    n_ctx: int,
    n_prompts: int,
    n_abnormal_ctx: int,
    n_learned_abnormal: int,
) -> PromptTexts:
    """PromptAD's three prompt groups; every normal state and every abnormal state gets each of the ``n_prompts`` context sets."""
    ctx = " ".join([NORMAL_PLACEHOLDER] * n_ctx)
    abnormal_ctx = " ".join([ABNORMAL_PLACEHOLDER] * n_abnormal_ctx)
    return PromptTexts(
        normal=[f"{ctx} {state.format(class_name)}." for state in normal_states for _ in range(n_prompts)],
        handcrafted=[f"{ctx} {state.format(class_name)}." for state in abnormal_state_list for _ in range(n_prompts)],
        learned=[f"{ctx} {abnormal_ctx} {class_name}." for _ in range(n_learned_abnormal) for _ in range(n_prompts)],
    )
