"""Load backbones: pretrained tag, local checkpoint or random weights, with their preprocessing.

Two libraries build them (the entry's ``library``): open_clip (CLIP, here) and timm (CNN feature maps and ViT patch
tokens, :mod:`fsad.backbones.timm_models`). Weights are resolved the same way for both, without waiting on a network
that is not there: a local file is used as is, a tag found in the Hugging Face cache loads from the cache, and only
otherwise does the library download (after a quick check that the hub is reachable). When that fails,
``weights_fallback`` decides: ``error`` stops with the ways to provide the weights, ``random`` warns loudly and builds
random weights that are identical in every job (seeded on CPU).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol
from urllib.parse import urlparse

import open_clip
import torch
from torchvision.transforms import v2

from fsad.backbones.activation import NO_WEIGHTS, ActivationMismatchError, built_quick_gelu, check_tag_table, declared_quick_gelu, is_weights_file
from fsad.backbones.preprocess import autocast_dtype, square_preprocessing
from fsad.backbones.spec import TIMM, backbone_library
from fsad.seeding import derive_seed

if TYPE_CHECKING:
    from fsad.backbones.timm_models import TimmBackbone
    from fsad.features.types import FeatureBatch

log = logging.getLogger(__name__)
# The fsad-tiny presets (see fsad.backbones): registered wherever models are built, i.e. on importing this module.
open_clip.add_model_config(Path(__file__).parent / "model_configs")
RANDOM = "random"
TEXT_BATCH = 256


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be loaded and the config does not allow random ones."""


@dataclass
class Backbone:
    """A loaded CLIP model with what the feature and scoring code needs.

    Attributes:
        model: the open_clip ``CLIP`` model in eval mode, on ``device``.
        preprocess: PIL image -> ``(3, S, S)`` normalised tensor.
        spec: the backbone's config entry.
        weights: provenance: the tag or file loaded, ``random`` (asked for), or ``random (fallback: ...)``.
        grid: patch-grid side at ``spec['image_size']``.
    """

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    preprocess: Callable[[Any], torch.Tensor]
    spec: dict[str, Any]
    weights: str
    grid: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def depth(self) -> int:
        """Number of blocks of the vision transformer (24 for ViT-L-14), the range of ``layers`` and ``vv_layers``."""
        return len(self.model.visual.transformer.resblocks)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 autocast on CUDA when the spec asks for it; None (fp32) otherwise."""
        return autocast_dtype(self.spec, self.device)

    def check_indices(self, layers: Collection[int], vv_layers: Collection[int], mid_layers: Collection[int] = ()) -> None:
        """Raise a config hint when ``layers``, ``vv_layers`` or ``mid_layers`` name blocks this backbone lacks."""
        from fsad.backbones.taps import check_block_indices

        check_block_indices(self.depth, layers, vv_layers, mid_layers)

    def encode(
        self,
        pixels: torch.Tensor,
        window_sizes: list[int],
        with_image: bool = True,
        layers: Collection[int] = (),
        vv_layers: Collection[int] = (),
        mid_layers: Collection[int] = (),
    ) -> FeatureBatch:
        """Features of preprocessed images ``(B, 3, S, S)``: :func:`fsad.backbones.window_embeddings.encode_images`."""
        from fsad.backbones.window_embeddings import encode_images

        return encode_images(self, pixels, window_sizes, with_image=with_image, layers=layers, vv_layers=vv_layers, mid_layers=mid_layers)

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """``(len(prompts), D)`` un-normalised text embeddings, float32."""
        chunks = []
        for start in range(0, len(prompts), TEXT_BATCH):
            tokens = self.tokenizer(prompts[start : start + TEXT_BATCH]).to(self.device)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                chunks.append(self.model.encode_text(tokens).float())
        return torch.cat(chunks)


def pick_device() -> torch.device:
    """CUDA when a GPU is visible (``CUDA_VISIBLE_DEVICES`` is honoured), else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# A backbone's ``resize`` (absent: direct): how images reach ``image_size``.
RESIZES = ("direct", "promptad")
PROMPTAD_LOAD_SIZE = 1024  # PromptAD's datasets/dataset.py: cv2.resize(img, (1024, 1024)) before its transform


def _promptad_resize(image_size: int) -> Callable[[Any], Any]:
    """PromptAD's two resizes: cv2 bilinear (``INTER_LINEAR``, on uint8) to 1024 x 1024, then PIL bicubic to
    ``image_size`` (its ``transforms.Resize((240, 240), Image.BICUBIC)`` on the PIL image; the 240 crop is then the whole)."""
    import cv2
    import numpy as np
    from PIL import Image

    def resize(img: Any) -> Any:
        loaded = cv2.resize(np.asarray(img.convert("RGB")), (PROMPTAD_LOAD_SIZE, PROMPTAD_LOAD_SIZE), interpolation=cv2.INTER_LINEAR)
        return Image.fromarray(loaded).resize((image_size, image_size), Image.BICUBIC)

    return resize


def preprocessing(model: torch.nn.Module, image_size: int, resize: str | None = None) -> Callable[[Any], torch.Tensor]:
    """WinCLIP's preprocessing, as anomalib's: RGB, resize to ``image_size`` square (bicubic, antialiased), normalise.

    ``resize: promptad`` resizes as PromptAD's code does instead (:func:`_promptad_resize`; RGB, not its test-time BGR).
    """
    cfg = model.visual.preprocess_cfg
    resize = resize or "direct"
    if resize not in RESIZES:
        raise ValueError(f"backbone resize {resize!r} is not one of {list(RESIZES)}; fix `resize:` of the backbone in the config")
    if resize == "promptad":
        return v2.Compose(
            [
                v2.Lambda(_promptad_resize(image_size)),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean=cfg["mean"], std=cfg["std"]),
            ]
        )
    return square_preprocessing(image_size, cfg["mean"], cfg["std"], "bicubic")


def _hub_reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_checkpoint(arch: str, tag: str) -> str | None:
    """Path of the tag's checkpoint in the Hugging Face cache, if it is there."""
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    repo = (cfg.get("hf_hub") or "").strip("/")
    if not repo:
        return None
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


# A backbone's ``pos_embed_resize`` (absent: bicubic): how position embeddings reach a grid other than the architecture's.
POS_EMBED_RESIZES = ("bicubic", "bilinear")


def regrid_bilinear(model: torch.nn.Module, image_size: int) -> torch.nn.Module:
    """Make a native-size open_clip model take ``image_size`` px: its patch position grid resized bilinearly.

    What AnomalyCLIP's and FAPrompt's ``VisionTransformer.forward`` does on its first call at a new size
    (``F.interpolate(..., mode="bilinear")``: no antialiasing, ``align_corners=False``; the class row kept) and
    writes back into the model; open_clip's own ``resize_pos_embed`` is bicubic and antialiased. ``model`` is
    changed in place and returned.
    """
    visual = model.visual
    patch = visual.patch_size[0]
    grid = image_size // patch
    old = visual.positional_embedding.detach()
    side = round((old.shape[0] - 1) ** 0.5)
    if grid == side:
        return model
    width = old.shape[1]
    patches = old[1:].reshape(1, side, side, width).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bilinear", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(grid * grid, width)
    visual.positional_embedding = torch.nn.Parameter(torch.cat([old[:1], resized]), requires_grad=visual.positional_embedding.requires_grad)
    visual.image_size = (image_size, image_size)
    visual.grid_size = (grid, grid)
    return model


def _create(arch: str, image_size: int, pretrained: str | None, quick_gelu: bool, pos_embed_resize: str = "bicubic") -> torch.nn.Module:
    """open_clip's model with the activation ``quick_gelu`` asks for; open_clip's QuickGELU-mismatch warning is an error.

    At an ``image_size`` other than the architecture's, ``pos_embed_resize: bicubic`` builds the model at that size
    (open_clip resizes a checkpoint's position embeddings once, bicubic); ``bilinear`` builds it at its own size
    and resizes the grid bilinearly (:func:`regrid_bilinear`).
    """
    native = open_clip.get_model_config(arch)
    if native is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    if pos_embed_resize not in POS_EMBED_RESIZES:
        raise ValueError(f"pos_embed_resize {pos_embed_resize!r} is not one of {list(POS_EMBED_RESIZES)}; fix `pos_embed_resize:` of the backbone in the config")
    native_size = native["vision_cfg"]["image_size"]
    force = None if native_size == image_size or pos_embed_resize == "bilinear" else image_size
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="QuickGELU mismatch")
        try:
            model = open_clip.create_model(arch, pretrained=pretrained, force_image_size=force, force_quick_gelu=quick_gelu, device="cpu")
        except UserWarning as err:
            raise ActivationMismatchError(f"{arch} ({pretrained}): {err}") from err
    built = built_quick_gelu(model)
    if built != quick_gelu:
        raise ActivationMismatchError(
            f"{arch} ({pretrained or 'no weights'}): built with {'QuickGELU' if built else 'GELU'}, but its weights were trained with "
            f"{'QuickGELU' if quick_gelu else 'GELU'}"
        )
    return regrid_bilinear(model, image_size) if pos_embed_resize == "bilinear" else model


def _random_model(arch: str, image_size: int, seed: int, quick_gelu: bool, pos_embed_resize: str = "bicubic") -> torch.nn.Module:
    """Random weights, the same in every job. The activation has no parameters, so either network gets the same tensors.

    ``bicubic`` draws them at ``image_size`` (the position grid drawn at that size, as before the option existed);
    ``bilinear`` draws the architecture's own size and resizes its grid, as the public codes would with those weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, arch, image_size))
        return _create(arch, image_size, None, quick_gelu, pos_embed_resize)


class Network(Protocol):
    """How one library builds a backbone entry's network, for the weights resolution every library shares."""

    arch: str
    pretrained: str | None

    def check(self) -> None:
        """Raise ValueError when ``pretrained`` is neither a file nor a tag the library knows for ``arch``."""

    def random(self, seed: int) -> torch.nn.Module:
        """The network with random weights, the same tensors in every job for one ``seed``."""

    def from_file(self, path: str) -> torch.nn.Module:
        """The network with the weights of a checkpoint file (a local one, or the tag's in the Hugging Face cache)."""

    def cached_checkpoint(self) -> str | None:
        """The tag's checkpoint in the Hugging Face cache, if it is there."""

    def download(self) -> torch.nn.Module:
        """The network with the tag's weights, downloaded by the library."""

    def how_to_provide(self) -> str:
        """The ways to provide the weights, for the error when they cannot be had."""

    def backbone(self, model: torch.nn.Module, spec: dict[str, Any], weights: str, device: torch.device) -> Any:
        """The loaded backbone (eval mode, on ``device``) of ``model`` with weights provenance ``weights``."""


@dataclass
class _OpenClipNetwork:
    """An open_clip entry's network: the activation its weights declare, at the entry's input size."""

    arch: str
    pretrained: str | None
    image_size: int
    quick_gelu: bool
    pos_embed_resize: str = "bicubic"

    @classmethod
    def of(cls, spec: dict[str, Any]) -> _OpenClipNetwork:
        arch = spec["arch"]
        image_size = int(spec.get("image_size") or open_clip.get_model_config(arch)["vision_cfg"]["image_size"])
        return cls(arch, spec.get("pretrained"), image_size, declared_quick_gelu(spec), spec.get("pos_embed_resize") or "bicubic")

    def check(self) -> None:
        if self.pretrained not in open_clip.list_pretrained_tags_by_model(self.arch):
            raise ValueError(
                f"{self.pretrained!r} is neither a file nor an open_clip tag of {self.arch}; tags: {open_clip.list_pretrained_tags_by_model(self.arch)}"
            )
        check_tag_table(self.arch, self.pretrained)

    def random(self, seed: int) -> torch.nn.Module:
        return _random_model(self.arch, self.image_size, seed, self.quick_gelu, self.pos_embed_resize)

    def from_file(self, path: str) -> torch.nn.Module:
        return _create(self.arch, self.image_size, path, self.quick_gelu, self.pos_embed_resize)

    def cached_checkpoint(self) -> str | None:
        return _cached_checkpoint(self.arch, self.pretrained)

    def download(self) -> torch.nn.Module:
        return _create(self.arch, self.image_size, self.pretrained, self.quick_gelu, self.pos_embed_resize)

    def how_to_provide(self) -> str:
        return _how_to_provide(self.arch, self.pretrained)

    def backbone(self, model: torch.nn.Module, spec: dict[str, Any], weights: str, device: torch.device) -> Backbone:
        model = model.eval().to(device)
        visual = model.visual
        grid = visual.grid_size[0] if isinstance(visual.grid_size, tuple) else int(visual.grid_size)
        return Backbone(
            model=model,
            tokenizer=open_clip.get_tokenizer(self.arch),
            preprocess=preprocessing(model, self.image_size, spec.get("resize")),
            spec=dict(spec),
            weights=weights,
            grid=grid,
            device=device,
        )


def _pretrained_model(network: Network) -> torch.nn.Module:
    """Load a local checkpoint or a tag; raise WeightsUnavailableError with the reason when it cannot be had."""
    pretrained = network.pretrained
    if is_weights_file(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"checkpoint file {path} does not exist")
        return network.from_file(str(path))
    cached = network.cached_checkpoint()
    if cached:
        return network.from_file(cached)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable(endpoint):
        raise WeightsUnavailableError(f"{network.arch}/{pretrained} is not in the Hugging Face cache and {endpoint} cannot be reached")
    try:
        return network.download()
    except RuntimeError as err:
        raise WeightsUnavailableError(str(err)) from err


def _how_to_provide(arch: str, pretrained: str) -> str:
    return (
        f"To provide the weights of {arch} ({pretrained}): run once with network access (open_clip downloads them into "
        f"the Hugging Face cache, ~/.cache/huggingface or $HF_HOME), or copy a cache that has them, or set the "
        f"backbone's `pretrained:` to a local checkpoint file (open_clip_pytorch_model.bin). "
        f"For an offline smoke run only, `weights_fallback: random` continues with random weights."
    )


def _with_weights(network: Network, weights_fallback: str, seed: int, weights: str | None) -> tuple[torch.nn.Module, str]:
    """The network with its weights, and their provenance: the tag or file, ``random``, or ``random (fallback: ...)``."""
    arch, pretrained = network.arch, network.pretrained
    if pretrained not in NO_WEIGHTS and not is_weights_file(pretrained):
        network.check()
    if pretrained in NO_WEIGHTS:
        return network.random(seed), RANDOM
    if weights is not None and weights.startswith(RANDOM):
        return network.random(seed), weights
    try:
        return _pretrained_model(network), pretrained
    except WeightsUnavailableError as err:
        # Features recorded with pretrained weights must never meet a random text tower.
        if weights_fallback != RANDOM or weights is not None:
            raise WeightsUnavailableError(f"pretrained weights unavailable: {err}. {network.how_to_provide()}") from err
        message = (
            f"\n{'!' * 78}\n!! {arch}: pretrained weights {pretrained!r} unavailable ({err}).\n"
            f"!! weights_fallback: random -> continuing with RANDOM weights. Results are NOT comparable to papers.\n{'!' * 78}"
        )
        log.warning(message)
        # The job's stderr goes to its log file; the terminal running snakemake must see this too.
        print(message, file=sys.__stderr__)
        return network.random(seed), f"random (fallback: {pretrained} unavailable)"


def load_backbone(
    spec: dict[str, Any],
    device: torch.device | str | None = None,
    weights_fallback: str = "error",
    seed: int = 0,
    weights: str | None = None,
) -> Backbone | TimmBackbone:
    """Load the backbone of a config entry (``library``, ``arch``, ``pretrained``, ``image_size``, ``resize``, ``pos_embed_resize``,
    ``image_embedding``, ``quick_gelu``, ``precision``).

    An open_clip network has the MLP activation its weights were trained with (:mod:`fsad.backbones.activation`):
    QuickGELU for OpenAI's tags, whether the weights come from the hub, the cache, a file or the random fallback. A timm
    entry (``library: timm``) gives a :class:`fsad.backbones.timm_models.TimmBackbone`, its weights resolved alike.

    At an ``image_size`` other than the architecture's own, open_clip builds the model for the new patch
    grid (``create_model(force_image_size=...)``) and, loading a checkpoint, resizes its position
    embeddings to that grid (``resize_pos_embed``: bicubic, antialiased, class row kept), e.g.
    ViT-L-14-336 at 518 px: 24x24 -> 37x37; ViT-L-14 at 240 px: 16x16 -> 17x17 (238 px covered, the last
    2 px unseen). AnomalyCLIP and FAPrompt resize bilinearly instead (at run time), so their features at
    518 px are close to these, not equal; ``pos_embed_resize: bilinear`` resizes as they do (:func:`regrid_bilinear`).
    ``image_embedding: no_ln_post`` makes the image embedding ``class token @ proj`` without ``ln_post``, as theirs
    (:func:`fsad.backbones.window_embeddings.image_embeddings`).

    Args:
        weights_fallback: ``error`` or ``random`` (see the module docstring).
        seed: seeds random weights (``derive_seed(seed, arch, image_size)``) so every job builds the same ones.
        weights: a provenance recorded earlier (a feature store's); ``random...`` rebuilds those random
            weights without trying the pretrained ones again, so a scoring job always matches its features.
    """
    device = torch.device(device) if device is not None else pick_device()
    if backbone_library(spec) == TIMM:
        from fsad.backbones.timm_models import TimmNetwork

        network = TimmNetwork.of(spec)
    else:
        network = _OpenClipNetwork.of(spec)
    model, provenance = _with_weights(network, weights_fallback, seed, weights)
    return network.backbone(model, spec, provenance, device)
