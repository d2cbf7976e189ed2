"""timm backbones (``library: timm``): CNN feature maps and ViT patch tokens, cached like CLIP's features.

Two families, told apart by timm's own model registry:

* **ViTs** of timm's ``vision_transformer`` module (DINOv2: ``vit_small_patch14_dinov2``, ``vit_base_patch14_dinov2``),
  built for the entry's ``image_size`` (timm resamples a checkpoint's position embeddings to that grid when it loads
  it: bicubic, antialiased; DINOv2's torch.hub code interpolates at run time instead, so features at 448 px are close
  to the hub model's, not equal). ``patch_tokens`` are the last block's tokens after the final LayerNorm without
  the prefix (class and register) tokens, ``(P, W)`` as AnomalyDINO reads them; the image embedding is timm's pooled
  output (DINOv2: the normed class token); ``layers`` are 1-based blocks, after the final LayerNorm like the last one.
* **CNNs** (ResNets, Wide ResNets, ... anything with timm's ``forward_intermediates``): ``layers`` are the stages of
  timm's ``feature_info`` by index (ResNets: 1..4 = ``layer1``..``layer4``; 0, the stem, is not offered), each stored
  as its feature map flattened row-major, ``(h * w, C)`` with its own square grid ``h = sqrt(P)``; ``patch_tokens``
  is the last stage's map and the image embedding its global average (timm's pre-logits pooling). PatchCore reads
  ``layer2`` and ``layer3``; the whole network runs for a new image, since the store holds its final features too.

Weights: ``pretrained`` is a timm tag of the architecture (``tv_in1k``, ``lvd142m``), a local checkpoint file
(``model.safetensors`` or ``pytorch_model.bin``, loaded by timm with ``weights_only``), or ``none``; resolved as for
open_clip (:mod:`fsad.backbones.loading`), the Hugging Face cache first. Preprocessing is the square resize of
:mod:`fsad.backbones.preprocess` with the interpolation, mean and std of the tag's pretrained config (the
architecture's default tag's for a file or no weights), also when the tag's weights fall back to random ones.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Callable

import timm
import torch
from torch import nn

from fsad.backbones.preprocess import autocast_dtype, square_preprocessing
from fsad.features.types import FeatureBatch
from fsad.seeding import derive_seed

VIT, CNN = "vit", "cnn"
# timm's modules whose models are plain ViTs with ``forward_intermediates`` over their blocks and ``img_size``.
VIT_MODULES = ("vision_transformer",)
CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")


def family(arch: str) -> str:
    """``vit`` or ``cnn``: how the architecture's features are read (see the module docstring)."""
    return VIT if timm.models.is_model_in_modules(arch, VIT_MODULES) else CNN


def _cached_checkpoint(arch: str, tag: str) -> str | None:
    """Path of the tag's checkpoint in the Hugging Face cache (timm's downloads land there), if it is there."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else CHECKPOINT_FILES
    for filename in names:
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


@dataclass
class TimmBackbone:
    """A loaded timm network with what the feature code needs (the interface of :class:`fsad.backbones.loading.Backbone`
    that feature extraction and stores use; there is no text tower).

    Attributes:
        model: the timm model (no classifier) in eval mode, on ``device``.
        preprocess: PIL image -> ``(3, S, S)`` normalised tensor.
        spec: the backbone's config entry; weights: their provenance (tag, file, ``random``, ``random (fallback: ...)``).
        grid: side of the ``patch_tokens`` grid (ViT patch grid, a CNN's last feature map).
        kind: ``vit`` or ``cnn``.
    """

    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    spec: dict[str, Any]
    weights: str
    grid: int
    kind: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def depth(self) -> int:
        """The highest index ``layers`` may name: the ViT's blocks, or the CNN's stages after the stem."""
        return len(self.model.blocks) if self.kind == VIT else len(self.model.feature_info) - 1

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.spec, self.device)

    def check_indices(self, layers: Collection[int], vv_layers: Collection[int], mid_layers: Collection[int] = ()) -> None:
        """Raise a config hint for layers outside 1..depth, and for V-V or mid-block layers (CLIP transformer taps)."""
        arch = self.spec["arch"]
        if vv_layers:
            raise ValueError(f"timm backbone {arch} has no V-V attention path (AnomalyCLIP's, a CLIP one); remove vv_layers from it and its readers")
        if mid_layers:
            raise ValueError(
                f"timm backbone {arch} has no mid-block states (PromptAD's, read inside an open_clip block); remove mid_layers from it and its readers"
            )
        wrong = sorted(n for n in layers if not 1 <= n <= self.depth)
        if wrong:
            what = "blocks" if self.kind == VIT else "feature stages (timm's feature_info indices; ResNets: layer1..layer4)"
            raise ValueError(f"the backbone's layers {wrong} are not {what} 1..{self.depth} of {arch}; fix `layers:` of the backbone in the config")

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        raise ValueError(f"timm backbone {self.spec['arch']} has no text tower; methods that read prompts need an open_clip backbone")

    @torch.inference_mode()
    def encode(
        self,
        pixels: torch.Tensor,
        window_sizes: list[int],
        with_image: bool = True,
        layers: Collection[int] = (),
        vv_layers: Collection[int] = (),
        mid_layers: Collection[int] = (),
    ) -> FeatureBatch:
        """Features of preprocessed images ``(B, 3, S, S)`` from one pass (float32; ``image_ids`` empty).

        ``with_image`` False computes only ``layers`` and stops after the last one (extending cached images).
        """
        if window_sizes:
            raise ValueError(f"timm backbone {self.spec['arch']} has no window embeddings (WinCLIP's, a CLIP one); set window_sizes: [] for it")
        self.check_indices(layers, vv_layers, mid_layers)
        layers = sorted(layers)
        pixels = pixels.to(self.device)
        dtype = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            final, taps = self._forward(pixels, layers, with_image)
            image = patches = pixels.new_zeros((0,))
            if with_image:
                image = self.model.forward_head(final, pre_logits=True)
                patches = final[:, self.model.num_prefix_tokens :] if self.kind == VIT else _flat(final)
        return FeatureBatch(
            image_ids=[],
            image_embeddings=image.float(),
            patch_tokens=patches.float(),
            windows={},
            grid=self.grid,
            layers={n: (tap if self.kind == VIT else _flat(tap)).float() for n, tap in zip(layers, taps)},
        )

    def _forward(self, pixels: torch.Tensor, layers: list[int], with_image: bool) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """The final features (None without ``with_image``) and the ``layers``' outputs, in order, from one pass."""
        if not layers:
            return self.model.forward_features(pixels), []
        # timm indexes ViT blocks from 0 and CNN stages by feature_info index (0 = the stem)
        indices = [n - 1 for n in layers] if self.kind == VIT else layers
        options = {"norm": True, "output_fmt": "NLC"} if self.kind == VIT else {}
        if not with_image:
            return None, self.model.forward_intermediates(pixels, indices=indices, stop_early=True, intermediates_only=True, **options)
        final, taps = self.model.forward_intermediates(pixels, indices=indices, **options)
        return final, taps


def _flat(feature_map: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, h * w, C)``, positions row-major."""
    return feature_map.flatten(2).transpose(1, 2)


@dataclass
class TimmNetwork:
    """A timm entry's network, for :func:`fsad.backbones.loading.load_backbone` (its weights resolution)."""

    arch: str
    pretrained: str | None
    image_size: int
    kind: str

    @classmethod
    def of(cls, spec: dict[str, Any]) -> TimmNetwork:
        arch = spec["arch"]
        if "." in arch:
            name, tag = arch.split(".", 1)
            raise ValueError(f"timm backbone {arch}: give the architecture without its tag (arch: {name}, pretrained: {tag})")
        if arch not in timm.list_models():
            raise ValueError(f"unknown timm architecture {arch!r}; see timm.list_models()")
        if spec.get("image_size") is None:
            raise ValueError(f"timm backbone {arch}: set its image_size (the square input side in pixels)")
        if spec.get("resize") not in (None, "direct"):
            raise ValueError(f"timm backbone {arch}: resize {spec['resize']!r} is an open_clip option (PromptAD's); remove `resize:` from it")
        return cls(arch, spec.get("pretrained"), int(spec["image_size"]), family(arch))

    def _create(self, name: str, **kwargs: Any) -> nn.Module:
        size = {"img_size": self.image_size} if self.kind == VIT else {}
        return timm.create_model(name, num_classes=0, **size, **kwargs)

    def check(self) -> None:
        if not timm.list_pretrained(f"{self.arch}.{self.pretrained}"):
            tags = [name.split(".", 1)[1] for name in timm.list_pretrained(f"{self.arch}.*")]
            raise ValueError(f"{self.pretrained!r} is neither a file nor a timm tag of {self.arch}; tags: {tags}")

    def random(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, self.arch, self.image_size))
            return self._create(self.arch, pretrained=False)

    def _tagged(self) -> str:
        """The model name timm knows the weights by: ``arch.tag`` for a tag, the bare architecture for a file."""
        from fsad.backbones.activation import NO_WEIGHTS, is_weights_file

        return self.arch if self.pretrained in NO_WEIGHTS or is_weights_file(self.pretrained) else f"{self.arch}.{self.pretrained}"

    def from_file(self, path: str) -> nn.Module:
        return self._create(self._tagged(), pretrained=True, pretrained_cfg_overlay={"file": path})

    def cached_checkpoint(self) -> str | None:
        return _cached_checkpoint(self.arch, self.pretrained)

    def download(self) -> nn.Module:
        try:
            return self._create(self._tagged(), pretrained=True)
        except OSError as err:  # the hub's errors (no connection, no such file) are OSErrors
            raise RuntimeError(str(err)) from err

    def how_to_provide(self) -> str:
        return (
            f"To provide the weights of {self.arch} ({self.pretrained}): run once with network access (timm downloads "
            f"timm/{self.arch}.{self.pretrained} from the Hugging Face hub into its cache, ~/.cache/huggingface or $HF_HOME), "
            f"or copy a cache that has them, or set the backbone's `pretrained:` to a local checkpoint file of that model "
            f"({' or '.join(CHECKPOINT_FILES)}). For an offline smoke run only, `weights_fallback: random` continues with random weights."
        )

    def backbone(self, model: nn.Module, spec: dict[str, Any], weights: str, device: torch.device) -> TimmBackbone:
        model = model.eval().to(device)
        # the tag's config, whichever way its weights arrived (the random fallback too): the same numbers either way
        cfg = timm.models.get_pretrained_cfg(self._tagged()).to_dict()
        preprocess = square_preprocessing(self.image_size, cfg["mean"], cfg["std"], cfg.get("interpolation") or "bicubic")
        if self.kind == VIT:
            grid = model.patch_embed.grid_size[0]
        else:
            with torch.inference_mode():
                grid = model.forward_features(torch.zeros(1, 3, self.image_size, self.image_size, device=device)).shape[-1]
        return TimmBackbone(model, preprocess, dict(spec), weights, int(grid), self.kind, device)
