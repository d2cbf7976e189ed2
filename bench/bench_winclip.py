"""Throughput of WinCLIP+ (1-shot): this project's pipeline against anomalib's ``WinClipModel``.

Both sides get the same open_clip model (random weights, seeded), the same preprocessed test images
and the same normal reference. Timed per test image: feature extraction (image, patch and window
embeddings) plus scoring (image score and anomaly map at input resolution). Not timed: loading,
preprocessing, text embeddings and the reference memory (per-category setup on both sides).

    python bench/bench_winclip.py --arch fsad-tiny --n-images 8 --batch-sizes 8 --out bench/results_tiny.md
    python bench/bench_winclip.py --n-images 8 --batch-sizes 8 --out bench/results_cpu.md
    python bench/bench_winclip.py --devices cuda --n-images 256 --batch-sizes 16 64 --precisions fp32 bf16 --out bench/results_cuda.md
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from PIL import Image
from scipy.stats import spearmanr

import fsad.backbones.loading  # noqa: F401  (registers the fsad-tiny preset)
from fsad.backbones.loading import load_backbone
from fsad.backbones.window_embeddings import encode_images
from fsad.io import write_text
from fsad.scorers.winclip.anomalib_reference import anomalib_winclip
from fsad.scorers.winclip.torch_model import build_reference_memory, upsample_maps, winclip_scores
from fsad.text.prompt_ensembles import text_embeddings

WINDOW_SIZES = [2, 3]
TEMPERATURE = 0.07  # anomalib's
CLASS_NAME = "textile"


def textile_images(n_test: int, root: Path | None = None) -> tuple[list[Image.Image], Image.Image]:
    """``n_test`` textile images (half with local defects) and one normal reference.

    From conformal-clip-data, or from ``root`` holding its layout (``nominal/*.jpg``, ``local/*.jpg``),
    e.g. a few hundred images copied for a machine without the package.
    """
    if root is None:
        import conformal_clip_data as data

        nominal_dir, local_dir = Path(data.nominal_dir()), Path(data.local_dir())
    else:
        nominal_dir, local_dir = root / "nominal", root / "local"
    nominal = sorted(nominal_dir.glob("*.jpg"))
    local = sorted(local_dir.glob("*.jpg"))
    if len(nominal) < 2 or not local:
        raise FileNotFoundError(f"need textile images in {nominal_dir} and {local_dir}")
    paths = [p for pair in zip(nominal[1:], local) for p in pair][:n_test]
    return [Image.open(p).convert("RGB") for p in paths], Image.open(nominal[0]).convert("RGB")


def timed(run_batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], pixels: torch.Tensor, batch: int, device: torch.device):
    """Seconds for all images (after one warm-up batch), image scores ``(N,)`` and maps ``(N, H, W)``."""
    run_batch(pixels[:batch])
    _sync(device)
    started = time.perf_counter()
    outputs = [run_batch(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    _sync(device)
    seconds = time.perf_counter() - started
    return seconds, torch.cat([o[0].float().cpu() for o in outputs]), torch.cat([o[1].float().cpu() for o in outputs])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def our_pipeline(args: argparse.Namespace, device: torch.device, precision: str, reference_pixels: torch.Tensor):
    """This project's WinCLIP+ at ``precision`` (bf16 autocast on CUDA only): pixels -> (scores, maps)."""
    image_size = open_clip.get_model_config(args.arch)["vision_cfg"]["image_size"]
    spec = {
        "arch": args.arch,
        "pretrained": None,
        "image_size": image_size,
        "window_sizes": WINDOW_SIZES,
        "batch_size": max(args.batch_sizes),
        "precision": precision,
    }
    backbone = load_backbone(spec, device, "random", args.seed)
    with torch.inference_mode():
        text = text_embeddings(backbone.encode_text, CLASS_NAME, "anomalib")
        memory = build_reference_memory(encode_images(backbone, reference_pixels, WINDOW_SIZES), WINDOW_SIZES)

    def run_batch(batch_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            out = winclip_scores(encode_images(backbone, batch_pixels, WINDOW_SIZES), text, WINDOW_SIZES, TEMPERATURE, memory)
            return out.image_scores, upsample_maps(out.maps, image_size)

    return backbone, run_batch


def bench_device(args: argparse.Namespace, device: torch.device) -> list[dict]:
    precisions = args.precisions if device.type == "cuda" else ["fp32"]  # bf16 autocast is a CUDA path
    backbone = load_backbone(
        {"arch": args.arch, "pretrained": None, "image_size": open_clip.get_model_config(args.arch)["vision_cfg"]["image_size"]},
        device,
        "random",
        args.seed,
    )
    images, reference = textile_images(args.n_images, args.images)
    pixels = torch.stack([backbone.preprocess(img) for img in images]).to(device)
    reference_pixels = backbone.preprocess(reference).unsqueeze(0).to(device)
    with torch.inference_mode():
        anomalib_model = anomalib_winclip(backbone.model, CLASS_NAME, reference_pixels)

    def anomalib(batch_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            out = anomalib_model(batch_pixels)
            return out.pred_score, out.anomaly_map

    # Same seed, same architecture: every side gets identical random weights.
    sides = {"anomalib 2.7 (fp32)": anomalib}
    for precision in precisions:
        sides[f"fsad ({precision})"] = our_pipeline(args, device, precision, reference_pixels)[1]

    rows = []
    for batch in args.batch_sizes:
        best: dict[str, tuple] = {}
        # Interleaved repeats, best time kept: the fairest figure on a machine shared with other jobs.
        for _ in range(args.repeats):
            for name, run_batch in sides.items():
                result = timed(run_batch, pixels, batch, device)
                if name not in best or result[0] < best[name][0]:
                    best[name] = result
        _, reference_scores, reference_maps = best["anomalib 2.7 (fp32)"]
        for name, (seconds, scores, maps) in best.items():
            rows.append(
                {
                    "device": device.type if device.type == "cpu" else torch.cuda.get_device_name(device),
                    "impl": name,
                    "batch": batch,
                    "images/s": len(pixels) / seconds,
                    "max |score diff|": (scores - reference_scores).abs().max().item(),
                    "rank corr": spearmanr(scores.numpy(), reference_scores.numpy()).statistic,
                    "max |map diff|": (maps - reference_maps).abs().max().item(),
                }
            )
    return rows


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    header = (
        "| device | impl | batch | images/s | max \\|score diff\\| | score rank corr. | max \\|map diff\\| |\n"
        "|---|---|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['device']} | {r['impl']} | {r['batch']} | {r['images/s']:.3f} | {r['max |score diff|']:.2e} "
        f"| {r['rank corr']:.6f} | {r['max |map diff|']:.2e} |"
        for r in rows
    ]
    context = (
        f"WinCLIP+ 1-shot, {args.arch} (random weights, seed {args.seed}), {args.n_images} test images, "
        f"windows {WINDOW_SIZES}, torch {torch.__version__}, open_clip {open_clip.__version__}, "
        f"{torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}; "
        f"best of {args.repeats} interleaved repeats; differences against anomalib's scores and maps.\n\n"
    )
    return context + header + "\n".join(lines) + "\n"


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every throughput bench here shares: images, batches, devices, repeats, seed, threads, output."""
    parser.add_argument("--n-images", type=int, default=8, help="test images")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--devices", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda when present)")
    parser.add_argument("--images", type=Path, default=None, help="folder with nominal/ and local/ textile jpgs (default: conformal-clip-data)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file for the table")


def run_bench(args: argparse.Namespace, bench: Callable[[argparse.Namespace, torch.device], list[dict]], table: Callable[[list[dict], argparse.Namespace], str]) -> None:
    """Run ``bench`` on every device asked for and write (and print) the Markdown ``table`` of its rows."""
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [row for name in devices for row in bench(args, torch.device(name))]
    text = table(rows, args)
    write_text(args.out, text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-16-plus-240", help="open_clip architecture (fsad-tiny for a smoke run)")
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32"], help="our rows on CUDA (anomalib stays fp32)"
    )
    common_arguments(parser)
    run_bench(parser.parse_args(argv), bench_device, markdown)


if __name__ == "__main__":
    main()
