"""PromptAD's training step with this project's code: the time per step of the segmentation prompts (n_pro 1, patch
tokens) and of the image-level prompts (n_pro 3, CLS embeddings), split into the text tower's forward, the losses and
the backward pass, so that a change to the fit can be compared.

The backbone has random weights (seeded; no pretrained weights are needed): the step's cost does not depend on them.
The visual side is cached in the feature store, so the step sees fixed normalised embeddings: random unit vectors of
the shot's patch grid (k shots x P patches) and of its CLS embeddings. Each configuration runs ``--warmup`` steps,
then ``--steps`` timed ones; the table gives the median and the fastest.

    OMP_NUM_THREADS=2 python bench/bench_promptad.py --out bench/results_promptad_cpu.md
    python bench/bench_promptad.py --arch fsad-tiny --steps 3   # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-B-16-plus-240")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = load_backbone({"arch": args.arch, "pretrained": "none"}, "cpu")
    model = backbone.model.requires_grad_(False)
    params = method_params(METHOD, {"deviation_loss": False, "normal_states": ["{}"], "abnormal_states": list(PROMPTAD_ABNORMAL_STATES)})
    dim = model.visual.proj.shape[1]
    grid = backbone.grid
    rows = []
    for label, n_prompts, count in (("segmentation (n_pro 1)", 1, grid * grid), ("image-level (n_pro 3)", 3, 1)):
        learner = build_learner(backbone, _Category(), params, torch.Generator().manual_seed(0), n_prompts)
        embeddings = F.normalize(torch.randn(args.shots, count, dim), dim=-1)
        optimizer = torch.optim.SGD(learner.parameters(), lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"])
        logit_scale = float(model.logit_scale)
        for _ in range(args.warmup):
            _step(model, learner, embeddings, logit_scale, optimizer, params["alignment_weight"])
        timed = [_step(model, learner, embeddings, logit_scale, optimizer, params["alignment_weight"]) for _ in range(args.steps)]
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
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
