"""PromptAD's training step with this project's code: the time per step of the segmentation prompts (n_pro 1, patch
tokens) and of the image-level prompts (n_pro 3, CLS embeddings), split into the text tower's forward, the losses and
the backward pass, so that a change to the fit can be compared.

The backbone has random weights (seeded; no pretrained weights are needed): the step's cost does not depend on them.
The visual side is cached in the feature store, so the step sees fixed normalised embeddings: random unit vectors of
the shot's patch grid (k shots x P patches) and of its CLS embeddings. Each configuration runs ``--warmup`` steps,
then ``--steps`` timed ones; the table gives the median and the fastest.

With ``--public-code DIR`` (a checkout of FuNz-0/PromptAD) the public code's step is timed in the same process,
alternating with this project's, so that a busy machine slows both alike: its ``train_seg.py`` / ``train_cls.py``
step on the same shot count (its prompt learner and text forward, its per-step image encoding, its losses and
backward), run in fp32 (its code forces fp16, which a CPU does not run usefully) on random weights. The table then
gives the public step, the project's, and the ratio.

    OMP_NUM_THREADS=2 python bench/bench_promptad.py --out bench/results_promptad_cpu.md
    OMP_NUM_THREADS=2 python bench/bench_promptad.py --public-code ~/src/PromptAD --out bench/results_promptad_cpu.md
    python bench/bench_promptad.py --arch fsad-tiny --steps 3   # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from torch.nn import functional as F

from fsad.backbones.loading import load_backbone
from fsad.scorers.devprompt.fit import build_learner
from fsad.scorers.devprompt.losses import abnormal_alignment_loss, triplet_loss, visual_to_text_loss
from fsad.scorers.devprompt.method import METHOD
from fsad.scorers.devprompt.prompt_texts import PROMPTAD_ABNORMAL_STATES
from fsad.scorers.devprompt.training import encode_prompts, prompt_prototypes
from fsad.scorers.registry import method_params


class _Category:
    """What :func:`build_learner` reads of a training category."""

    category = "bottle"
    class_name = "bottle"


def _step(model, learner, embeddings, logit_scale, optimizer, alignment_weight) -> dict[str, float]:
    """One SGD step as :func:`fsad.scorers.devprompt.training.train_prompts` takes it (PromptAD's three losses); seconds per part."""
    times = {}
    started = time.perf_counter()
    optimizer.zero_grad()
    normal, handcrafted, learned = encode_prompts(model, learner)
    times["text forward"] = time.perf_counter() - started
    started = time.perf_counter()
    prototypes = prompt_prototypes(normal, handcrafted, learned)
    abnormal = F.normalize(torch.cat([handcrafted, learned]), dim=-1)
    loss = (
        visual_to_text_loss(embeddings, prototypes[0], abnormal, logit_scale)
        + triplet_loss(embeddings, prototypes[0], prototypes[1])
        + alignment_weight * abnormal_alignment_loss(handcrafted, learned)
    )
    times["losses"] = time.perf_counter() - started
    started = time.perf_counter()
    loss.backward()
    optimizer.step()
    times["backward + SGD"] = time.perf_counter() - started
    times["step"] = sum(times.values())
    return times


def _public_code(root: Path) -> ModuleType:
    """The public code's ``PromptAD.model``, patched to build its CLIP in fp32 without downloading weights."""
    sys.path.insert(0, str(root))
    import PromptAD.model as public  # noqa: PLC0415 (the user's checkout, only with --public-code)

    create = public.CLIPAD.create_model_and_transforms
    public.CLIPAD.create_model_and_transforms = lambda model_name, pretrained=None, precision="fp32", **kw: create(
        model_name, pretrained=None, precision="fp32", **kw
    )
    learner_init = public.PromptLearner.__init__
    public.PromptLearner.__init__ = lambda self, *args: learner_init(self, *args[:-1], "fp32")
    return public


def _public_step(model, optimizer, images: torch.Tensor, task: str, alignment_weight: float) -> float:
    """Seconds of one step of the public ``train_seg.py`` (``task`` "seg") or ``train_cls.py`` ("cls") loop."""
    from PromptAD import TripletLoss  # noqa: PLC0415

    started = time.perf_counter()
    normal, handcrafted, learned = model.prompt_learner()
    optimizer.zero_grad()
    normal = model.encode_text_embedding(normal, model.tokenized_normal_prompts)
    handcrafted = model.encode_text_embedding(handcrafted, model.tokenized_abnormal_prompts_handle)
    learned = model.encode_text_embedding(learned, model.tokenized_abnormal_prompts_learned)
    abnormal = torch.cat([handcrafted, learned])
    match = (F.normalize(handcrafted, dim=-1).mean(0) - F.normalize(learned, dim=-1).mean(0)).norm(dim=0) ** 2.0
    cls_feature, patches, _, _ = model.encode_image(images)
    normal_anchor = F.normalize(normal.mean(0, keepdim=True), dim=-1)
    abnormal_anchor = F.normalize(abnormal.mean(0, keepdim=True), dim=-1)
    abnormal = F.normalize(abnormal, dim=-1)
    scale = model.model.logit_scale
    if task == "seg":
        logits = torch.cat([patches @ normal_anchor.T, patches @ abnormal.T], dim=-1) * scale
        target = torch.zeros(logits.shape[:2], dtype=torch.long)
        loss = F.cross_entropy(logits.transpose(1, 2), target) + TripletLoss(0.0)(patches, normal_anchor, abnormal_anchor)
    else:
        logits = torch.cat([cls_feature @ normal_anchor.T, cls_feature @ abnormal.T], dim=-1) * scale
        target = torch.zeros(len(logits), dtype=torch.long)
        loss = F.cross_entropy(logits, target) + TripletLoss(0.0)(cls_feature, normal_anchor, abnormal_anchor)
    (loss + alignment_weight * match).backward()
    optimizer.step()
    return time.perf_counter() - started


def _public_model(public: ModuleType, n_prompts: int, shots: int):
    model = public.PromptAD(
        out_size_h=400, out_size_w=400, device="cpu", backbone="ViT-B-16-plus-240", pretrained_dataset="laion400m_e32",
        n_ctx=4, n_pro=n_prompts, n_ctx_ab=1, n_pro_ab=4, class_name="bottle", k_shot=shots, img_resize=240, img_cropsize=240,
    )
    model.precision = "fp32"
    model.eval_mode()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-B-16-plus-240")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--public-code", type=Path, default=None, help="a FuNz-0/PromptAD checkout, to time its step alongside")
    args = parser.parse_args()
    public = _public_code(args.public_code) if args.public_code else None
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = load_backbone({"arch": args.arch, "pretrained": "none"}, "cpu")
    model = backbone.model.requires_grad_(False)
    params = method_params(METHOD, {"deviation_loss": False, "normal_states": ["{}"], "abnormal_states": list(PROMPTAD_ABNORMAL_STATES)})
    dim = model.visual.proj.shape[1]
    grid = backbone.grid
    rows, ratios = [], []
    for label, task, n_prompts, count in (("segmentation (n_pro 1)", "seg", 1, grid * grid), ("image-level (n_pro 3)", "cls", 3, 1)):
        learner = build_learner(backbone, _Category(), params, torch.Generator().manual_seed(0), n_prompts)
        embeddings = F.normalize(torch.randn(args.shots, count, dim), dim=-1)
        optimizer = torch.optim.SGD(learner.parameters(), lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"])
        logit_scale = float(model.logit_scale)
        ours = lambda: _step(model, learner, embeddings, logit_scale, optimizer, params["alignment_weight"])  # noqa: E731
        theirs = lambda: None  # noqa: E731
        if public is not None:
            public_model = _public_model(public, n_prompts, args.shots)
            public_optimizer = torch.optim.SGD(
                public_model.prompt_learner.parameters(), lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"]
            )
            images = torch.randn(args.shots, 3, 240, 240)
            theirs = lambda: _public_step(public_model, public_optimizer, images, task, params["alignment_weight"])  # noqa: E731
        for _ in range(args.warmup):
            ours(), theirs()
        timed, public_timed = [], []
        for _ in range(args.steps):  # alternating, so that the machine's load weighs on both alike
            timed.append(ours())
            public_timed.append(theirs())
        if public is not None:
            ratios.append((label, statistics.median(public_timed), statistics.median(t["step"] for t in timed)))
        prompts = sum(len(t) for t in (learner.normal_tokens, learner.handcrafted_tokens, learner.learned_tokens))
        for part in ("text forward", "losses", "backward + SGD", "step"):
            values = [t[part] for t in timed]
            rows.append((label, prompts, part, statistics.median(values), min(values)))
    lines = [
        f"PromptAD training step, {args.arch} (random weights), {args.shots} shot(s), {torch.get_num_threads()} threads, "
        f"{args.steps} timed steps after {args.warmup}",
        "",
        "| model | prompts | part | median ms | fastest ms |",
        "|---|---|---|---|---|",
        *(f"| {label} | {prompts} | {part} | {1000 * median:.1f} | {1000 * fastest:.1f} |" for label, prompts, part, median, fastest in rows),
    ]
    if ratios:
        public_total, ours_total = sum(r[1] for r in ratios), sum(r[2] for r in ratios)
        lines += [
            "",
            "Against the public code (FuNz-0/PromptAD, fp32, same process, steps alternating):",
            "",
            "| model | public step ms | this project ms | public / this |",
            "|---|---|---|---|",
            *(f"| {label} | {1000 * theirs:.1f} | {1000 * ours:.1f} | {theirs / ours:.1f}x |" for label, theirs, ours in ratios),
            f"| both models (one epoch of the fit) | {1000 * public_total:.1f} | {1000 * ours_total:.1f} | {public_total / ours_total:.1f}x |",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
