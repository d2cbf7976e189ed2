"""Tensors that pass from the feature store to the scorers."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

import torch

from fsad.features.parts import PART_NAMES

@dataclass
class FeatureBatch:
    """Backbone features (CLIP, or a timm network's) of ``N`` images, in the order of ``image_ids``.

    Attributes:
        image_ids: the images, in row order.
        image_embeddings: ``(N, D)`` projected CLS embeddings (not normalised).
        patch_tokens: ``(N, P, W)`` final-layer patch tokens after ``ln_post`` (not projected;
            ``P = grid * grid``), the patch-scale memory of WinCLIP+.
        windows: window size in patches -> ``(N, n_windows, D)`` projected window embeddings
            (not normalised), windows ordered as :func:`fsad.backbones.windows.window_patch_indices`.
        grid: patch grid side (15 for ViT-B-16-plus-240 at 240 px; a timm CNN's last feature map).
        layers: 1-based block index -> ``(N, P, W)`` that block's patch tokens after ``ln_post``, not
            projected (AnomalyCLIP, One-to-Normal: blocks 6, 12, 18, 24 of ViT-L-14); for a timm CNN, feature stage
            -> ``(N, h * w, C)`` its feature map, row-major, each stage with its own square grid
            (:mod:`fsad.backbones.timm_models`).
        vv_layers: 1-based block index -> ``(N, P, W)`` the V-V attention path's patch tokens after that
            block, after ``ln_post``, not projected (AnomalyCLIP's DPAM, :mod:`fsad.backbones.vv_attention`).
        mid_layers: 1-based block index -> ``(N, P, W)`` the residual stream's patch tokens inside that block,
            after its attention and before its MLP, raw (no ``ln_post``, not projected): PromptAD's visual memory.
    """

    image_ids: list[str]
    image_embeddings: torch.Tensor
    patch_tokens: torch.Tensor
    windows: dict[int, torch.Tensor]
    grid: int
    layers: dict[int, torch.Tensor] = field(default_factory=dict)
    vv_layers: dict[int, torch.Tensor] = field(default_factory=dict)
    mid_layers: dict[int, torch.Tensor] = field(default_factory=dict)
    reader: str = "a scorer"

    def read_by(self, reader: str) -> "FeatureBatch":
        """The same features, labelled with the config key of the instance that reads them (for ``require``'s hint)."""
        return replace(self, reader=reader)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "FeatureBatch":
        move = lambda t: t.to(device=device, dtype=dtype or t.dtype)  # noqa: E731
        return self._map(move)

    @staticmethod
    def concat(batches: Sequence["FeatureBatch"]) -> "FeatureBatch":
        """The rows of ``batches`` in order, with the window sizes and layers (of each kind) every one of them holds (the first's reader).

        Raises:
            ValueError: the batches come from different patch grids (other backbones or input sizes).
        """
        first, *rest = batches
        if not rest:
            return first
        grids = sorted({batch.grid for batch in batches})
        if len(grids) > 1:
            raise ValueError(f"feature batches of patch grids {grids} cannot be joined; they come from different backbones")
        join = lambda values: torch.cat(list(values))  # noqa: E731

        def common(field_name: str) -> dict[int, torch.Tensor]:
            parts = [getattr(batch, field_name) for batch in batches]
            return {k: join(part[k] for part in parts) for k in parts[0] if all(k in part for part in parts[1:])}

        return FeatureBatch(
            [i for batch in batches for i in batch.image_ids],
            join(batch.image_embeddings for batch in batches),
            join(batch.patch_tokens for batch in batches),
            common("windows"),
            first.grid,
            common("layers"),
            common("vv_layers"),
            common("mid_layers"),
            reader=first.reader,
        )

    def select(self, ids: list[str]) -> "FeatureBatch":
        """Rows of ``ids``, in that order."""
        pos = {i: n for n, i in enumerate(self.image_ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise KeyError(f"images not in this feature batch: {missing[:5]}")
        rows = torch.tensor([pos[i] for i in ids], dtype=torch.long)
        return self._map(lambda t: t[rows], list(ids))

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor], image_ids: list[str] | None = None) -> "FeatureBatch":
        """The same features with ``fn`` applied to every tensor (and ``image_ids`` replaced when given)."""
        return FeatureBatch(
            list(self.image_ids if image_ids is None else image_ids),
            fn(self.image_embeddings),
            fn(self.patch_tokens),
            {k: fn(v) for k, v in self.windows.items()},
            self.grid,
            {n: fn(v) for n, v in self.layers.items()},
            {n: fn(v) for n, v in self.vv_layers.items()},
            {n: fn(v) for n, v in self.mid_layers.items()},
            self.reader,
        )

    def require(
        self,
        *,
        window_sizes: Collection[int] = (),
        layers: Collection[int] = (),
        vv_layers: Collection[int] = (),
        mid_layers: Collection[int] = (),
    ) -> None:
        """Raise a config hint, naming :attr:`reader`, when it asks for window sizes or layers these features do not hold."""
        asked = {"window_sizes": window_sizes, "layers": layers, "vv_layers": vv_layers, "mid_layers": mid_layers}
        for part, (field_name, what, config_key) in PART_NAMES.items():
            held = getattr(self, field_name)
            missing = sorted(set(asked[part]) - set(held))
            if missing:
                raise ValueError(
                    f"{self.reader} asks for {what} {missing} that the feature store does not hold (it has {sorted(held)}); "
                    f"add them to {config_key} in the config, or change the parameters of {self.reader} that ask for them"
                )


def read_by(load: Callable[[list], FeatureBatch], reader: str) -> Callable[[list], FeatureBatch]:
    """``load`` whose batches name ``reader`` (``scorers.<instance>``) in their ``require`` hints."""
    return lambda items: load(items).read_by(reader)
