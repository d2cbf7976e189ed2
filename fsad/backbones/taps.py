"""One pass through a vision transformer's blocks that also keeps intermediate states (pure torch).

Layer taps are the residual stream after given blocks (what open_clip's ``forward_intermediates``
returns); V-V taps are the V-V path's stream after given blocks (see :mod:`fsad.backbones.vv_attention`).
Block indices are 1-based, as in AnomalyCLIP's ``features_list`` (6, 12, 18, 24 of ViT-L-14).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

from fsad.backbones.vv_attention import VV_BLOCKS, vv_attention, vv_start_block


@dataclass
class BlockStates:
    """The states kept by :func:`run_blocks`, all ``(B, L, W)`` with the class token first.

    Attributes:
        last: the stream after the last block run.
        layers: block index -> the stream after that block.
        vv_layers: block index -> the V-V path's stream after that block.
    """

    last: torch.Tensor
    layers: dict[int, torch.Tensor]
    vv_layers: dict[int, torch.Tensor]


def check_block_indices(depth: int, layers: Collection[int], vv_layers: Collection[int]) -> None:
    """Raise a config hint when ``layers`` or ``vv_layers`` name blocks a ``depth``-block transformer lacks."""
    wrong = sorted(n for n in layers if not 1 <= n <= depth)
    if wrong:
        raise ValueError(
            f"the backbone's layers {wrong} are not blocks 1..{depth} of its vision transformer; fix `layers:` of the backbone in the config"
        )
    first = vv_start_block(depth)
    wrong = sorted(n for n in vv_layers if not first <= n <= depth)
    if wrong:
        raise ValueError(
            f"the backbone's vv_layers {wrong} are outside blocks {first}..{depth}, the last {VV_BLOCKS} blocks where the V-V path "
            f"runs (AnomalyCLIP's DPAM); fix `vv_layers:` of the backbone in the config (ordinary blocks go in `layers:`)"
        )


def run_blocks(
    blocks: nn.ModuleList,
    tokens: torch.Tensor,
    layers: Collection[int] = (),
    vv_layers: Collection[int] = (),
    stop_early: bool = False,
) -> BlockStates:
    """Run ``blocks`` in turn on ``tokens`` ``(B, L, W)``, keeping the states of ``layers`` and ``vv_layers``.

    Args:
        stop_early: stop after the last block a state is kept of (then ``last`` is that block's output).

    The V-V path runs only from its first block to the last block in ``vv_layers``; it reads the
    original path's states and never feeds back, so the original path is ``blocks`` applied in turn.
    """
    check_block_indices(len(blocks), layers, vv_layers)
    vv_from, vv_until = vv_start_block(len(blocks)), max(vv_layers, default=0)
    through = max([*layers, *vv_layers], default=0) if stop_early else len(blocks)
    x, vv = tokens, None
    states = BlockStates(tokens, {}, {})
    for n, block in enumerate(blocks[:through], start=1):
        if vv_from <= n <= vv_until:
            vv = (x if vv is None else vv) + block.ls_1(vv_attention(block, block.ln_1(x)))
        x = block(x)
        if n in layers:
            states.layers[n] = x
        if n in vv_layers:
            states.vv_layers[n] = vv
    states.last = x
    return states
