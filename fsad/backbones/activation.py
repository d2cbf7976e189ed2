"""The MLP activation a backbone's weights were trained with (GELU or QuickGELU), known before model code is imported.

OpenAI's CLIP weights (and some others: ``ViT-B-32`` ``laion400m_e31``, the MetaCLIP and DFN tags of several
architectures) were trained with QuickGELU, ``x * sigmoid(1.702 x)``; open_clip's plain architecture configs build
GELU, and open_clip only *warns* when a tag's weights are loaded into the other activation. fsad builds the activation
the weights declare and treats any difference as an error:

* an open_clip tag: what the tag declares (``open_clip.get_pretrained_cfg(arch, tag)["quick_gelu"]``), whether the
  weights come from the hub, the Hugging Face cache or, when unavailable, are random fallback weights;
* a local checkpoint file: a file does not say how it was trained, so the backbone entry must say it
  (``quick_gelu: true`` for OpenAI weights), unless the architecture itself is a ``-quickgelu`` one;
* no weights (``pretrained: none``): the architecture config's own activation, or ``quick_gelu`` when given.

The Snakefile needs the answer for every backbone to name its feature directory (the activation is part of the
spec hash), and importing open_clip there would cost seconds in every dry run and cluster job. So the tags that
declare QuickGELU are kept in ``quick_gelu_tags.json``, written from the pinned open_clip by
``python -m fsad.backbones.activation``; a unit test checks it against the installed open_clip, and
:func:`check_tag_table` checks it again wherever a model is built.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

TAG_TABLE = Path(__file__).with_name("quick_gelu_tags.json")
OWN_MODEL_CONFIGS = Path(__file__).with_name("model_configs")
NO_WEIGHTS = ("", "none", None)


class ActivationMismatchError(ValueError):
    """The activation a backbone would be built with differs from the one its weights were trained with."""


def is_weights_file(pretrained: str) -> bool:
    """Whether ``pretrained`` names a checkpoint file (it has a suffix or a path separator) rather than a tag."""
    return bool(Path(pretrained).expanduser().suffix) or os.sep in pretrained


@cache
def _quick_gelu_tags() -> frozenset[tuple[str, str]]:
    table = json.loads(TAG_TABLE.read_text())
    return frozenset((arch, tag) for arch, tag in table["quick_gelu"])


def _arch_config(arch: str) -> dict[str, Any] | None:
    """The architecture's model config JSON (open_clip's or fsad's own), read without importing open_clip."""
    spec = find_spec("open_clip")
    folders = [OWN_MODEL_CONFIGS] + ([Path(p) / "model_configs" for p in spec.submodule_search_locations] if spec and spec.submodule_search_locations else [])
    for folder in folders:
        path = folder / f"{arch}.json"
        if path.is_file():
            return json.loads(path.read_text())
    return None


def arch_quick_gelu(arch: str) -> bool:
    """Whether the architecture's own config builds QuickGELU (the ``-quickgelu`` variants)."""
    return bool((_arch_config(arch) or {}).get("quick_gelu", False))


def tag_quick_gelu(arch: str, tag: str) -> bool:
    """Whether the open_clip tag's weights were trained with QuickGELU (from ``quick_gelu_tags.json``)."""
    return (arch, tag) in _quick_gelu_tags()


def declared_quick_gelu(spec: dict[str, Any]) -> bool:
    """The activation the backbone entry ``spec`` must be built with: True for QuickGELU, False for GELU.

    Raises:
        ActivationMismatchError: ``quick_gelu`` is given and contradicts the tag or the architecture, or the
            weights are a local file and nothing says how they were trained.
    """
    arch, pretrained, given = spec["arch"], spec.get("pretrained"), spec.get("quick_gelu")
    where = f"backbone {arch} ({pretrained or 'no weights'})"
    own = arch_quick_gelu(arch)
    if given is False and own:
        raise ActivationMismatchError(f"{where}: quick_gelu: false, but architecture {arch} always builds QuickGELU; use {arch.removesuffix('-quickgelu')} for GELU")
    if pretrained in NO_WEIGHTS:
        return own if given is None else bool(given)
    if is_weights_file(pretrained):
        if given is None and not own:
            raise ActivationMismatchError(
                f"{where}: a checkpoint file does not say which activation its weights were trained with; set quick_gelu: "
                f"true in the backbone entry for OpenAI's weights (and others trained with QuickGELU), quick_gelu: false for GELU"
            )
        return own if given is None else bool(given)
    declared = tag_quick_gelu(arch, pretrained)
    if given is not None and bool(given) != declared:
        raise ActivationMismatchError(
            f"{where}: quick_gelu: {str(given).lower()}, but the tag's weights were trained with "
            f"{'QuickGELU' if declared else 'GELU'}; remove quick_gelu from the backbone entry"
        )
    if own and not declared:
        raise ActivationMismatchError(f"{where}: architecture {arch} builds QuickGELU, but the tag's weights were trained with GELU")
    return declared


def check_tag_table(arch: str, tag: str) -> None:
    """Check ``quick_gelu_tags.json`` against the installed open_clip for one tag (imports open_clip)."""
    import open_clip

    truth = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    if truth != tag_quick_gelu(arch, tag):
        raise ActivationMismatchError(
            f"{TAG_TABLE} says {arch}/{tag} was trained with {'QuickGELU' if not truth else 'GELU'}, but the installed open_clip "
            f"declares {'QuickGELU' if truth else 'GELU'}; regenerate the table: python -m fsad.backbones.activation"
        )


def built_quick_gelu(model: Any) -> bool:
    """Whether every MLP activation of an open_clip model is QuickGELU (True) or every one GELU (False)."""
    import torch
    from open_clip.transformer import QuickGELU

    kinds = {type(module) for module in model.modules() if isinstance(module, (QuickGELU, torch.nn.GELU))}
    if len(kinds) != 1:
        raise ActivationMismatchError(f"the built model holds activations {sorted(k.__name__ for k in kinds)}, expected all GELU or all QuickGELU")
    return kinds == {QuickGELU}


def write_tag_table(path: Path = TAG_TABLE) -> int:
    """Write the tags of the installed open_clip that declare QuickGELU; return how many."""
    from importlib import metadata

    import open_clip

    pairs = sorted([arch, tag] for arch, tag in open_clip.list_pretrained() if open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu"))
    head = {"open_clip": metadata.version("open_clip_torch"), "written_by": "python -m fsad.backbones.activation"}
    rows = ",\n".join(f"  {json.dumps(pair)}" for pair in pairs)
    path.write_text(json.dumps(head, indent=1)[:-2] + f',\n "quick_gelu": [\n{rows}\n ]\n}}\n')
    return len(pairs)


if __name__ == "__main__":
    print(f"{TAG_TABLE}: {write_tag_table()} tags declare QuickGELU")
