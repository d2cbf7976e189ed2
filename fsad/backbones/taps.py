"""One pass through a vision transformer's blocks that also keeps intermediate states (pure torch).

Layer taps are the residual stream after given blocks (what open_clip's ``forward_intermediates``
returns); V-V taps are the V-V path's stream after given blocks (see :mod:`fsad.backbones.vv_attention`);
mid-block taps are the residual stream inside given blocks, after the block's attention and before its MLP
(``x + ls_1(attn(ln_1(x)))``): what PromptAD's visual memory keeps, because the in-place ``x_ori += ...`` of the
block after its hooked ``resblocks[2]`` and ``resblocks[7]`` changes the hooked outputs into the states inside
blocks 4 and 9 (``../shared/reference/implementations.md`` §8).
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
        mid_layers: block index -> the stream inside that block, after its attention and before its MLP.
    """

    last: torch.Tensor
    layers: dict[int, torch.Tensor]
    vv_layers: dict[int, torch.Tensor]
    mid_layers: dict[int, torch.Tensor]


def check_block_indices(depth: int, layers: Collection[int], vv_layers: Collection[int], mid_layers: Collection[int] = ()) -> None:
    """Raise a config hint when ``layers``, ``vv_layers`` or ``mid_layers`` name blocks a ``depth``-block transformer lacks."""
    wrong = sorted(n for n in layers if not 1 <= n <= depth)
    if wrong:
        raise ValueError(
            f"the backbone's layers {wrong} are not blocks 1..{depth} of its vision transformer; fix `layers:` of the backbone in the config"
        )
    wrong = sorted(n for n in mid_layers if not 1 <= n <= depth)
    if wrong:
        raise ValueError(
            f"mid-block states {wrong} are asked, but the vision transformer has blocks 1..{depth}; fix the scorer parameter that asks for them "
            f"(memory_blocks)"
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
    mid_layers: Collection[int] = (),
) -> BlockStates:
    """Run ``blocks`` in turn on ``tokens`` ``(B, L, W)``, keeping the states of ``layers``, ``vv_layers`` and ``mid_layers``.

    Args:
        stop_early: stop after the last block a state is kept of (then ``last`` is that block's output).

    The V-V path runs only from its first block to the last block in ``vv_layers``; it reads the
    original path's states and never feeds back, so the original path is ``blocks`` applied in turn.
    """
    check_block_indices(len(blocks), layers, vv_layers, mid_layers)
    vv_from, vv_until = vv_start_block(len(blocks)), max(vv_layers, default=0)
    through = max([*layers, *vv_layers, *mid_layers], default=0) if stop_early else len(blocks)
    x, vv = tokens, None
    states = BlockStates(tokens, {}, {}, {})
    for n, block in enumerate(blocks[:through], start=1):
        if vv_from <= n <= vv_until:
            vv = (x if vv is None else vv) + block.ls_1(vv_attention(block, block.ln_1(x)))
        if n in mid_layers:
            # open_clip's ResidualAttentionBlock.forward, split where the state is kept (same operations, same values)
            inside = x + block.ls_1(block.attention(q_x=block.ln_1(x)))
            states.mid_layers[n] = inside
            x = inside + block.ls_2(block.mlp(block.ln_2(inside)))
        else:
            x = block(x)
        if n in layers:
            states.layers[n] = x
        if n in vv_layers:
            states.vv_layers[n] = vv
    states.last = x
    return states
