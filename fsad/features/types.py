"""Tensors that pass from the feature cache to the scorers."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FeatureBatch:
    """WinCLIP features of ``N`` images, in the order of ``image_ids``.

    Attributes:
        image_ids: the images, in row order.
        image_embeddings: ``(N, D)`` projected CLS embeddings (not normalised).
        patch_tokens: ``(N, P, W)`` final-layer patch tokens after ``ln_post`` (not projected;
            ``P = grid * grid``), the patch-scale memory of WinCLIP+.
        windows: window size in patches -> ``(N, n_windows, D)`` projected window embeddings
            (not normalised), windows ordered as :func:`fsad.backbones.windows.window_patch_indices`.
        grid: patch grid side (15 for ViT-B-16-plus-240 at 240 px).
        extra: optional further arrays by name (e.g. ``"layer6"`` -> ``(N, P, W)``), for later scorers.
    """

    image_ids: list[str]
    image_embeddings: torch.Tensor
    patch_tokens: torch.Tensor
    windows: dict[int, torch.Tensor]
    grid: int
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "FeatureBatch":
        move = lambda t: t.to(device=device, dtype=dtype or t.dtype)  # noqa: E731
        return FeatureBatch(
            self.image_ids,
            move(self.image_embeddings),
            move(self.patch_tokens),
            {k: move(v) for k, v in self.windows.items()},
            self.grid,
            {k: move(v) for k, v in self.extra.items()},
        )

    def require_windows(self, window_sizes: list[int], scorer: str) -> None:
        """Raise a config hint when ``scorer`` asks for window sizes these features do not hold."""
        missing = sorted(set(window_sizes) - set(self.windows))
        if missing:
            raise ValueError(
                f"{scorer} asks for window sizes {missing} that the feature cache does not hold (it has "
                f"{sorted(self.windows)}); add them to the backbone's window_sizes (or the dataset's extra_window_sizes) "
                f"in the config, or drop them from scorers.{scorer}.window_sizes"
            )

    def select(self, ids: list[str]) -> "FeatureBatch":
        """Rows of ``ids``, in that order."""
        pos = {i: n for n, i in enumerate(self.image_ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise KeyError(f"images not in this feature batch: {missing[:5]}")
        rows = torch.tensor([pos[i] for i in ids], dtype=torch.long)
        return FeatureBatch(
            list(ids),
            self.image_embeddings[rows],
            self.patch_tokens[rows],
            {k: v[rows] for k, v in self.windows.items()},
            self.grid,
            {k: v[rows] for k, v in self.extra.items()},
        )
