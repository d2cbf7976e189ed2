"""Every FAPrompt parameter (AnomalyCLIP is FAPrompt with ``cap`` and ``dap`` off) reaches its maths: each is set to a
non-default value on the tiny world, through the real fit and score jobs (``run_fit`` / ``run_scorer``), and the
tests assert where the numbers move, where they stay, and which way they go.

Most fits run one epoch of one batch (the 6 test-split images of ``widget``, batch size 8). The loss parts of that
step then come from the seeded initial prompts, so a loss weight scales its own part exactly and any two fits that
differ in one parameter can be compared part by part. Spies around ``training_loss``, ``forward_batch``,
``select_prior_patches``, ``PromptLearner`` and ``torch.optim.Adam`` record what the training loop and the score
step really receive.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from scipy.ndimage import gaussian_filter

from fsad.data.manifest import read_manifest
from fsad.data.splits import pool_image_ids
from fsad.io import read_json
from fsad.score_files import write_score_table
from fsad.scorers.faprompt import fit as fit_module
from fsad.scorers.faprompt import params as params_module
from fsad.scorers.faprompt import scorer as scorer_module
from fsad.scorers.faprompt import torch_model
from fsad.scorers.faprompt.method import METHOD
from fsad.scorers.faprompt.prompt_learner import PromptConfig
from fsad.scorers.faprompt.torch_model import ScoreConfig
from fsad.scorers.method import ReportContext, resolve
from fsad.scorers.registry import method_params

from .table_files import csv_table
from .tiny_world import CATEGORY, TINY, World, build_world

TEXT_WIDTH, EMBED_DIM = 64, 32  # fsad-tiny (fsad/backbones/model_configs/fsad-tiny.json): text width 64, embeddings 32, 2 text blocks
BASE = {
    "train_dataset": "toy", "vv_layers": [2], "epochs": 1,
    # every loss weight 1 (image_ce too, so its part exists): the reference parts the weights scale
    "static_map_weight": 1.0, "prior_map_weight": 1.0, "image_ce_weight": 1.0, "image_focal_weight": 1.0, "orthogonal_weight": 1.0, "prior_weight": 1.0,
}
# loss weight -> (its part of the loss, a value unlike the default and every other weight's)
WEIGHTS = {
    "static_map_weight": ("static_map", 0.3),
    "prior_map_weight": ("prior_map", 0.7),
    "image_ce_weight": ("image_ce", 0.2),
    "image_focal_weight": ("image_focal", 0.6),
    "orthogonal_weight": ("orthogonal", 0.45),
    "prior_weight": ("prior", 1.7),
}
# two zeroing fits, each zeroing three weights; the other three parts must stay at the reference
ZEROED = ({"static_map_weight", "image_ce_weight", "orthogonal_weight"}, {"prior_map_weight", "image_focal_weight", "prior_weight"})
# the prompt design with every count unlike its default and unlike each other
DESIGN = {"normal_tokens": 3, "abnormal_tokens": 4, "abnormal_prompts": 5, "deep_prompt_tokens": 3}
FAPROMPT_DESIGN = {**DESIGN, "cap": True, "dap_patches": 6, "dap_reduction": 8, "normal_words": "flawless object.", "abnormal_words": "cracked object."}
ANOMALYCLIP_DESIGN = {**DESIGN, "cap": False, "dap": False, "deep_prompt_depth": 1}


COVERED: dict[str, str] = {
    "faprompt.train_dataset": (
        "exempt: chooses which dataset's stores a dataset-scope fit reads, in the workflow layer (rules/common.smk "
        "train_dataset, fit_key, fit_categories), never a number inside fit or score; pinned by "
        "tests/workflow/test_faprompt.py::test_each_instance_fits_once_on_the_training_dataset_and_saves_its_prompts and "
        "tests/workflow/test_methods.py::test_a_dataset_scoped_fit_trains_once_on_the_training_dataset"
    ),
    "faprompt.train_split": "test_train_split_all_adds_the_normal_pool_to_the_training_images",
    "faprompt.vv_layers": "test_the_token_levels_reach_the_training_maps",
    "faprompt.cap": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.normal_tokens": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.abnormal_tokens": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.abnormal_prompts": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.normal_words": "test_the_prompt_words_reach_their_own_prompt",
    "faprompt.abnormal_words": "test_the_prompt_words_reach_their_own_prompt",
    "faprompt.deep_prompt_depth": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.deep_prompt_tokens": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.dap": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.dap_patches": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.dap_selection": "test_the_dap_selection_changes_the_prior_and_never_the_static_map",
    "faprompt.dap_reduction": "test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms",
    "faprompt.temperature": "test_the_temperature_divides_the_image_logits_at_scoring",
    "faprompt.image_score": "test_the_image_score_column_follows_the_chosen_formula",
    "faprompt.static_map_weight": "test_a_loss_weight_scales_its_own_part_of_the_training_loss",
    "faprompt.prior_map_weight": "test_a_loss_weight_scales_its_own_part_of_the_training_loss",
    "faprompt.image_ce_weight": "test_a_loss_weight_scales_its_own_part_of_the_training_loss",
    "faprompt.image_focal_weight": "test_a_loss_weight_scales_its_own_part_of_the_training_loss",
    "faprompt.image_focal_input": "test_the_image_focal_input_decides_how_the_score_enters_the_focal_loss",
    "faprompt.orthogonal_weight": "test_a_loss_weight_scales_its_own_part_of_the_training_loss",
    "faprompt.prior_weight": "test_a_loss_weight_scales_its_own_part_of_the_training_loss",
    "faprompt.prior_reduction": "test_the_summed_prior_loss_adds_the_normal_images_instead_of_averaging_them",
    "faprompt.focal_gamma": "test_a_larger_focal_gamma_shrinks_the_focal_terms_only",
    "faprompt.lr": "test_lr_and_betas_are_the_adam_steps_taken",
    "faprompt.betas": "test_lr_and_betas_are_the_adam_steps_taken",
    "faprompt.batch_size": "test_the_batch_size_splits_each_epoch_into_steps",
    "faprompt.epochs": "test_the_epoch_count_is_the_number_of_passes_over_the_training_images",
    "faprompt.loss_size": "test_the_loss_size_is_the_side_of_the_masks_the_losses_compare",
    "faprompt.measure_encoding": "test_measuring_the_encoding_adds_its_timings_and_leaves_the_prompts_alone",
    "faprompt.sigma": "test_sigma_smooths_the_maps_and_never_the_image_scores_or_the_fit",
    "faprompt.compare_scorers": "test_compare_scorers_are_the_comparison_columns_in_their_order",
    "faprompt.ablation": "test_the_ablation_rows_carry_their_labels_and_their_scorers_values",
    "faprompt.ablation.label": "test_the_ablation_rows_carry_their_labels_and_their_scorers_values",
    "faprompt.ablation.scorer": "test_the_ablation_rows_carry_their_labels_and_their_scorers_values",
}


# --- running fits and scores with spies ----------------------------------------------------------------


@dataclass
class FitRun:
    """One fit through ``run_fit`` and what its training loop received."""

    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]
    losses: list[dict[str, Any]] = field(default_factory=list)  # per training_loss call
    score_configs: list[ScoreConfig] = field(default_factory=list)
    prompt_configs: list[PromptConfig] = field(default_factory=list)
    selections: list[tuple[int, str]] = field(default_factory=list)
    adam: dict[str, Any] = field(default_factory=dict)

    @property
    def parts(self) -> dict[str, float]:
        """The loss parts of the first step (at the seeded initial prompts)."""
        return self.losses[0]["parts"]


@dataclass
class ScoreRun:
    scores: pd.DataFrame
    maps: np.ndarray
    score_configs: list[ScoreConfig] = field(default_factory=list)
    prompt_configs: list[PromptConfig] = field(default_factory=list)
    selections: list[tuple[int, str]] = field(default_factory=list)
    map_maxima: list[np.ndarray] = field(default_factory=list)


def _spy(mp: pytest.MonkeyPatch, record: FitRun | ScoreRun, forward_owner: Any) -> None:
    real_forward, real_select, real_learner = forward_owner.forward_batch, torch_model.select_prior_patches, params_module.PromptLearner

    def forward(learner, tokens, image, config):
        record.score_configs.append(config)
        outputs = real_forward(learner, tokens, image, config)
        if isinstance(record, ScoreRun):
            record.map_maxima.append(outputs.map_maxima.float().cpu().numpy())
        return outputs

    def select(tokens, abnormal_probability, k, how):
        record.selections.append((k, how))
        return real_select(tokens, abnormal_probability, k, how)

    def learner(config, tower):
        record.prompt_configs.append(config)
        return real_learner(config, tower)

    mp.setattr(forward_owner, "forward_batch", forward)
    mp.setattr(torch_model, "select_prior_patches", select)
    mp.setattr(params_module, "PromptLearner", learner)


class Bench:
    """The module's tiny world and its fits and scores, each run once (keyed by its parameters)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._fits: dict[str, FitRun] = {}
        self._scores: dict[str, ScoreRun] = {}

    def fit(self, **overrides: Any) -> FitRun:
        key = repr(sorted(overrides.items()))
        if key not in self._fits:
            self._fits[key] = self._run_fit({**BASE, **overrides})
        return self._fits[key]

    def _run_fit(self, params: dict[str, Any]) -> FitRun:
        record = FitRun({}, {})
        real_loss, real_adam = fit_module.training_loss, torch.optim.Adam

        def training_loss(outputs, masks, labels, config):
            loss, parts = real_loss(outputs, masks, labels, config)
            record.losses.append({
                "config": config, "parts": parts, "loss": float(loss.detach()), "labels": labels.tolist(), "mask_shape": tuple(masks.shape),
                "image_score": outputs.image_score.detach().tolist(), "text_probability": outputs.text_probability.detach().tolist(),
            })
            return loss, parts

        class Adam(real_adam):
            def __init__(self, parameters, *args, **kwargs):
                parameters = list(parameters)
                super().__init__(parameters, *args, **kwargs)
                record.adam.update(args=args, kwargs=kwargs, initial=[p.detach().clone() for p in parameters], grads=[], after=[])
                self._spied = parameters

            def step(self, closure=None):
                record.adam["grads"].append([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in self._spied])
                result = super().step(closure)
                record.adam["after"].append([p.detach().clone() for p in self._spied])
                return result

        with pytest.MonkeyPatch.context() as mp:
            _spy(mp, record, fit_module)
            mp.setattr(fit_module, "training_loss", training_loss)
            mp.setattr(torch.optim, "Adam", Adam)
            model = self.world.fit("faprompt", params, setting="zs")
        record.tensors = load_file(model)
        record.info = json.loads((model.parent / "fit.json").read_text())
        record.info["model"] = model
        return record

    def score(self, fit: dict[str, Any] | None = None, **overrides: Any) -> ScoreRun:
        """Score the test split with the model of ``fit`` (overrides of :data:`BASE`); sigma 0 unless overridden."""
        fit = fit or {}
        key = repr((sorted(fit.items()), sorted(overrides.items())))
        if key not in self._scores:
            model = self.fit(**fit).info["model"]
            record = ScoreRun(pd.DataFrame(), np.empty(0))
            with pytest.MonkeyPatch.context() as mp:
                _spy(mp, record, scorer_module)
                out = self.world.score("faprompt", {**BASE, **fit, "sigma": 0, **overrides}, setting="zs", model=model)
            record.scores, record.maps = out.scores.set_index("image_id"), out.maps.astype(np.float32)
            self._scores[key] = record
        return self._scores[key]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The tiny world with V-V levels 1 and 2; every job of the module shares one tiny CLIP.

    Each job would build the same seeded random tiny CLIP (about 0.7 s, most of it open_clip's tokenizer), so
    ``load_backbone`` returns one loaded instance per spec; the model is frozen and only read by the jobs.
    """
    from fsad.backbones import loading

    real, loaded = loading.load_backbone, {}

    def load_once(spec, device=None, weights_fallback="error", seed=0, weights=None):
        key = repr((sorted(spec.items()), str(device), weights_fallback, seed, weights))
        if key not in loaded:
            loaded[key] = real(spec, device, weights_fallback, seed, weights)
        return loaded[key]

    world = build_world(tmp_path_factory.mktemp("faprompt_params"), vv_layers=(1, 2))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load_backbone", load_once)
        yield Bench(world)


def training_images(world: World, split: str) -> pd.DataFrame:
    """Manifest rows of the images a fit reads with ``train_split``: the pool's images, of the test split unless ``all``."""
    manifest = read_manifest(world.manifest, CATEGORY).set_index("image_id")
    rows = manifest.loc[pool_image_ids(read_json(world.pool))]
    return rows if split == "all" else rows[rows["split"] == "test"]


def assert_parts(run: FitRun, reference: FitRun, same: set[str], moved: set[str]) -> None:
    """Parts in ``same`` equal the reference's (the parameter never reaches them); those in ``moved`` differ."""
    for name in same:
        assert run.parts[name] == pytest.approx(reference.parts[name], rel=1e-6), f"{name} moved"
    for name in moved:
        assert run.parts[name] != pytest.approx(reference.parts[name], rel=1e-4), f"{name} did not move"


def focal_by_hand(scores: list[float], labels: list[int], gamma: float, as_logit: bool) -> float:
    """Mean over images of ``(1 - exp(-bce))^gamma * bce``, bce of the score as a probability or as a logit."""
    total = 0.0
    for s, y in zip(scores, labels, strict=True):
        if as_logit:
            bce = math.log1p(math.exp(-s)) if y == 1 else math.log1p(math.exp(s))
        else:
            bce = -math.log(s) if y == 1 else -math.log(1 - s)
        total += (1 - math.exp(-bce)) ** gamma * bce
    return total / len(scores)


# --- loss weights and options ---------------------------------------------------------------------------


@pytest.mark.parametrize("weight", list(WEIGHTS))
def test_a_loss_weight_scales_its_own_part_of_the_training_loss(bench, weight):
    reference = bench.fit()
    weighted = bench.fit(**{name: value for name, (_, value) in WEIGHTS.items()})
    part, value = WEIGHTS[weight]
    # the training loop's loss receives exactly the configured weights
    config = weighted.losses[0]["config"]
    assert (config.static_map, config.prior_map, config.image_ce, config.image_focal, config.orthogonal, config.prior) == (0.3, 0.7, 0.2, 0.6, 0.45, 1.7)
    # at the same initial prompts the part is the reference part (weight 1) times this weight, whatever the others
    assert weighted.parts[part] == pytest.approx(value * reference.parts[part], rel=1e-5)
    # the loss the loop steps on (and logs) is the sum of the weighted parts
    assert weighted.info["loss_per_epoch"][0] == pytest.approx(sum(weighted.parts.values()), abs=2e-6)
    assert weighted.losses[0]["loss"] == pytest.approx(sum(weighted.parts.values()), rel=1e-6)
    assert not torch.equal(weighted.tensors["normal_context"], reference.tensors["normal_context"])


@pytest.mark.parametrize("weight", list(WEIGHTS))
def test_a_zero_loss_weight_removes_its_term_and_leaves_the_others(bench, weight):
    reference = bench.fit()
    zeroed = next(group for group in ZEROED if weight in group)
    run = bench.fit(**{name: 0.0 for name in zeroed})
    part = WEIGHTS[weight][0]
    assert run.parts.get(part, 0.0) == 0.0 and reference.parts[part] > 0
    kept = {WEIGHTS[name][0] for name in WEIGHTS if name not in zeroed}
    assert_parts(run, reference, same=kept, moved=set())
    assert run.losses[0]["loss"] == pytest.approx(sum(reference.parts[name] for name in kept), rel=1e-6)


def test_a_larger_focal_gamma_shrinks_the_focal_terms_only(bench):
    reference, run = bench.fit(), bench.fit(focal_gamma=4.0)
    assert run.losses[0]["config"].gamma == 4.0
    # (1 - p_t)^gamma < 1 falls with gamma: the focal parts shrink; dice, CE, orthogonality and prior have no gamma
    for name in ("static_map", "prior_map", "image_focal"):
        assert run.parts[name] < reference.parts[name] - 1e-6, name
    assert_parts(run, reference, same={"image_ce", "orthogonal", "prior"}, moved=set())
    first = reference.losses[0]
    assert run.parts["image_focal"] == pytest.approx(focal_by_hand(first["image_score"], first["labels"], 4.0, as_logit=False), rel=1e-5)


def test_the_image_focal_input_decides_how_the_score_enters_the_focal_loss(bench):
    reference, run = bench.fit(), bench.fit(image_focal_input="logit", prior_reduction="sum")
    assert run.losses[0]["config"].image_focal_input == "logit"
    for fitted, as_logit in ((reference, False), (run, True)):
        first = fitted.losses[0]
        assert fitted.parts["image_focal"] == pytest.approx(focal_by_hand(first["image_score"], first["labels"], 2.0, as_logit), rel=1e-5)
    assert_parts(run, reference, same={"static_map", "prior_map", "image_ce", "orthogonal"}, moved={"image_focal"})


def test_the_summed_prior_loss_adds_the_normal_images_instead_of_averaging_them(bench):
    reference, run = bench.fit(), bench.fit(image_focal_input="logit", prior_reduction="sum")
    assert run.losses[0]["config"].prior_reduction == "sum"
    normals = int((training_images(bench.world, "test")["label"] == 0).sum())
    assert normals == 3 and len(reference.losses) == 1  # one batch holds every training image
    assert run.parts["prior"] == pytest.approx(normals * reference.parts["prior"], rel=1e-5)
    assert_parts(run, reference, same={"static_map", "prior_map", "orthogonal", "image_ce"}, moved=set())


def test_lr_and_betas_are_the_adam_steps_taken(bench):
    run = bench.fit(lr=0.004, betas=[0.6, 0.95], epochs=2)
    adam = run.adam
    assert adam["kwargs"]["lr"] == 0.004 and tuple(adam["kwargs"]["betas"]) == (0.6, 0.95)
    assert len(adam["grads"]) == 2
    lr, (b1, b2), eps = 0.004, (0.6, 0.95), 1e-8
    for index, start in enumerate(adam["initial"]):
        g1, g2 = (step[index].double() for step in adam["grads"])
        # Adam by hand: the first step is lr * g / |g| whatever the betas; the second mixes both gradients by them
        first = start.double() - lr * g1 / (g1.abs() + eps)
        m, v = (1 - b1) * g1, (1 - b2) * g1**2
        m, v = b1 * m + (1 - b1) * g2, b2 * v + (1 - b2) * g2**2
        second = first - lr * (m / (1 - b1**2)) / ((v / (1 - b2**2)).sqrt() + eps)
        torch.testing.assert_close(adam["after"][0][index].double(), first, rtol=0, atol=2e-6)
        torch.testing.assert_close(adam["after"][1][index].double(), second, rtol=0, atol=2e-6)
    moved = (adam["after"][0][0] - adam["initial"][0]).abs()
    assert float(moved.median()) == pytest.approx(lr, rel=1e-3)  # the default lr would move them by 0.001


def test_the_epoch_count_is_the_number_of_passes_over_the_training_images(bench):
    one, two = bench.fit(), bench.fit(lr=0.004, betas=[0.6, 0.95], epochs=2)
    assert len(one.losses) == 1 and len(two.losses) == 2  # one batch per pass
    assert len(two.info["loss_per_epoch"]) == 2 and len(two.info["details"]["seconds_per_epoch"]) == 2
    assert len(one.info["loss_per_epoch"]) == 1


def test_the_batch_size_splits_each_epoch_into_steps(bench):
    reference, run = bench.fit(), bench.fit(batch_size=4, loss_size=16)
    n = len(training_images(bench.world, "test"))
    assert [len(call["labels"]) for call in reference.losses] == [n]
    assert [len(call["labels"]) for call in run.losses] == [4, n - 4]
    assert run.info["details"]["steps_per_epoch"] == 2 and len(run.adam["grads"]) == 2


def test_the_loss_size_is_the_side_of_the_masks_the_losses_compare(bench):
    reference, run = bench.fit(), bench.fit(batch_size=4, loss_size=16)
    assert [call["mask_shape"][1:] for call in run.losses] == [(16, 16), (16, 16)]
    assert run.info["details"]["loss_size"] == 16
    # null: the backbone's input side
    assert reference.losses[0]["mask_shape"][1:] == (TINY["image_size"], TINY["image_size"]) and reference.info["details"]["loss_size"] == 112


def test_measuring_the_encoding_adds_its_timings_and_leaves_the_prompts_alone(bench):
    plain, measured = bench.fit(batch_size=4, loss_size=16), bench.fit(batch_size=4, loss_size=16, measure_encoding=True)
    assert "encoding_seconds_per_image" not in plain.info["details"]
    details = measured.info["details"]
    assert details["encoding_seconds_per_image"] > 0
    assert details["encoding_seconds_per_epoch_avoided"] == pytest.approx(details["encoding_seconds_per_image"] * details["images"], abs=1e-3)
    for name, tensor in plain.tensors.items():
        torch.testing.assert_close(measured.tensors[name], tensor, rtol=0, atol=0)


def test_train_split_all_adds_the_normal_pool_to_the_training_images(bench):
    reference, run = bench.fit(), bench.fit(train_split="all")
    test, every = training_images(bench.world, "test"), training_images(bench.world, "all")
    assert len(every) > len(test) and (every["split"] == "train").any()
    for fitted, rows in ((reference, test), (run, every)):
        labels = [label for call in fitted.losses for label in call["labels"]]
        assert sorted(labels) == sorted(rows["label"].tolist())
        assert fitted.info["details"]["images"] == len(rows) and fitted.info["details"]["anomalous_images"] == int(rows["label"].sum())


# --- prompts, DAP, similarities ---------------------------------------------------------------------------


@pytest.mark.parametrize("design", [FAPROMPT_DESIGN, ANOMALYCLIP_DESIGN], ids=["faprompt", "anomalyclip"])
def test_the_prompt_design_sizes_the_learned_tensors_and_the_loss_terms(bench, design):
    run = bench.fit(**design)
    expected = PromptConfig(
        compound=design["cap"], normal_tokens=3, abnormal_tokens=4, abnormal_prompts=5,
        normal_words=design.get("normal_words", "object."), abnormal_words=design.get("abnormal_words", "damaged object."),
        deep_depth=design.get("deep_prompt_depth", 9), deep_tokens=3, prior=design.get("dap", True),
        prior_patches=design.get("dap_patches", 10), prior_reduction=design.get("dap_reduction", 16),
    )
    scored = bench.score(design)
    # the score step rebuilds the same prompts from the instance's parameters (and loads the fit into them)
    assert run.prompt_configs == [expected] and scored.prompt_configs == [expected]
    assert np.isfinite(scored.maps).all() and np.isfinite(scored.scores["score"]).all()
    shapes = {name: tuple(t.shape) for name, t in run.tensors.items()}
    if design["cap"]:
        # CAP: K = 5 abnormal prompts of 4 own tokens on the 3 shared normal ones; deep prompts in the 2nd of 2 text blocks;
        # DAP: 6 patches of 32 -> 192 // 8 = 24 hidden -> the text width
        assert shapes == {
            "normal_context": (3, TEXT_WIDTH), "abnormal_context": (5, 4, TEXT_WIDTH), "deep_prompts": (1, 3, TEXT_WIDTH),
            "prior_net.0.weight": (24, 6 * EMBED_DIM), "prior_net.0.bias": (24,), "prior_net.2.weight": (TEXT_WIDTH, 24), "prior_net.2.bias": (TEXT_WIDTH,),
        }
        assert set(run.selections) == set(scored.selections) == {(6, "top")}
        assert set(run.parts) == {"static_map", "prior_map", "prior", "image_ce", "image_focal", "orthogonal"}
    else:
        # AnomalyCLIP: one abnormal prompt with normal_tokens tokens of its own, no deep prompts (depth 1), no DAP
        assert shapes == {"normal_context": (3, TEXT_WIDTH), "abnormal_context": (1, 3, TEXT_WIDTH)}
        assert run.selections == scored.selections == []
        assert set(run.parts) == {"static_map", "image_ce", "image_focal"}  # one abnormal prompt: no orthogonality


@pytest.mark.parametrize("words", ["normal_words", "abnormal_words"])
def test_the_prompt_words_reach_their_own_prompt(bench, words):
    reference, run = bench.fit(), bench.fit(**{words: "cracked object."})
    config = run.prompt_configs[0]
    assert (config.normal_words, config.abnormal_words) == (("cracked object.", "damaged object.") if words == "normal_words" else ("object.", "cracked object."))
    # the orthogonality of the abnormal prompts reads only the abnormal prompts' words
    moved, same = ({"static_map", "image_ce"}, {"orthogonal"}) if words == "normal_words" else ({"static_map", "image_ce", "orthogonal"}, set())
    assert_parts(run, reference, same=same, moved=moved)


def test_the_dap_selection_changes_the_prior_and_never_the_static_map(bench):
    reference, run = bench.fit(), bench.fit(dap_selection="first")
    assert set(reference.selections) == {(10, "top")} and set(run.selections) == {(10, "first")}
    assert {c.prior_selection for c in run.score_configs} == {"first"}
    assert_parts(run, reference, same={"static_map", "orthogonal"}, moved={"prior", "prior_map", "image_ce"})
    # at scoring: the prior-adapted text, and with it the probability and the maps, move
    top, first = bench.score(), bench.score(dap_selection="first")
    assert set(first.selections) == {(10, "first")} and set(top.selections) == {(10, "top")}
    assert not np.allclose(first.scores["text_probability"], top.scores["text_probability"], rtol=0, atol=1e-6)
    assert not np.allclose(first.maps, top.maps, rtol=0, atol=1e-3)


def test_the_temperature_reaches_the_training_similarities(bench):
    reference, run = bench.fit(), bench.fit(temperature=0.05)
    assert {c.temperature for c in run.score_configs} == {0.05}
    # the top-k prior patches keep their order under any temperature, and the prompts their embeddings
    assert_parts(run, reference, same={"orthogonal", "prior"}, moved={"static_map", "prior_map", "image_ce", "image_focal"})


def test_the_temperature_divides_the_image_logits_at_scoring(bench):
    base, cold = bench.score(), bench.score(temperature=0.035)
    assert {c.temperature for c in cold.score_configs} == {0.035}
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    base_logit, cold_logit = logit(base.scores["text_probability"].to_numpy(np.float64)), logit(cold.scores["text_probability"].to_numpy(np.float64))
    assert np.abs(base_logit).min() > 1e-3
    # softmax over [normal, abnormal] of cos / tau: halving tau doubles the logit difference
    np.testing.assert_allclose(cold_logit, 2 * base_logit, rtol=2e-3)
    assert not np.allclose(cold.maps, base.maps, rtol=0, atol=1e-3)


def test_the_image_score_column_follows_the_chosen_formula(bench):
    runs = {"eq9": bench.score(), "code": bench.score(image_score="code"), "probability": bench.score(image_score="probability")}
    for how, run in runs.items():
        assert {c.image_score for c in run.score_configs} == {how}
        pd.testing.assert_series_equal(run.scores["text_probability"], runs["eq9"].scores["text_probability"])
        pd.testing.assert_series_equal(run.scores["map_max"], runs["eq9"].scores["map_max"])
        np.testing.assert_array_equal(run.maps, runs["eq9"].maps)
    p = runs["eq9"].scores["text_probability"].to_numpy()
    static, prior = np.concatenate(runs["code"].map_maxima).T
    np.testing.assert_allclose(runs["eq9"].scores["map_max"], (static + prior) / 2, rtol=1e-6)
    np.testing.assert_allclose(runs["eq9"].scores["score"], (p + (static + prior) / 2) / 2, rtol=1e-6)
    np.testing.assert_allclose(runs["code"].scores["score"], (p + (2 * static + prior) / 3) / 2, rtol=1e-6)
    np.testing.assert_allclose(runs["probability"].scores["score"], p, rtol=1e-6)
    assert not np.allclose(runs["code"].scores["score"], runs["eq9"].scores["score"], rtol=0, atol=1e-7)
    # fit side: the image score is what the focal loss reads, and nothing else
    reference, fitted = bench.fit(), bench.fit(image_score="probability")
    assert fitted.losses[0]["image_score"] == fitted.losses[0]["text_probability"] != reference.losses[0]["image_score"]
    assert_parts(fitted, reference, same={"static_map", "prior_map", "prior", "image_ce", "orthogonal"}, moved={"image_focal"})


def test_the_token_levels_reach_the_training_maps(bench):
    reference, run = bench.fit(), bench.fit(vv_layers=[1])
    # the maps and DAP's patches read the level; the prompts' orthogonality does not
    assert_parts(run, reference, same={"orthogonal"}, moved={"static_map", "prior_map", "prior"})


def test_the_token_levels_average_into_the_maps_and_dap_reads_the_last(bench):
    design = ANOMALYCLIP_DESIGN  # no DAP: a map is the mean over levels of a linear chain (upsampling, no smoothing)
    first, second, both = bench.score(design, vv_layers=[1]), bench.score(design), bench.score(design, vv_layers=[1, 2])
    np.testing.assert_allclose(both.maps, (first.maps + second.maps) / 2, atol=2e-3)
    assert not np.allclose(first.maps, second.maps, rtol=0, atol=1e-2)
    pd.testing.assert_series_equal(first.scores["text_probability"], second.scores["text_probability"])  # the image embedding has no level
    # with DAP the image probability reads the prior-adapted prompts, whose prior reads the last level alone
    only_1, only_2, levels_12 = bench.score(vv_layers=[1]), bench.score(), bench.score(vv_layers=[1, 2])
    pd.testing.assert_series_equal(levels_12.scores["text_probability"], only_2.scores["text_probability"], rtol=1e-6)
    assert not np.allclose(only_1.scores["text_probability"], only_2.scores["text_probability"], rtol=0, atol=1e-6)


def test_sigma_smooths_the_maps_and_never_the_image_scores_or_the_fit(bench):
    sharp, smooth = bench.score(), bench.score(sigma=2.5)
    expected = np.stack([gaussian_filter(m, sigma=2.5) for m in sharp.maps])
    np.testing.assert_allclose(smooth.maps, expected, atol=2e-3)
    assert (smooth.maps.max(axis=(1, 2)) < sharp.maps.max(axis=(1, 2))).all()
    pd.testing.assert_frame_equal(smooth.scores[["score", "text_probability", "map_max"]], sharp.scores[["score", "text_probability", "map_max"]])
    assert "sigma" not in METHOD.fit_params(bench.world.params("faprompt", {**BASE, "sigma": 2.5}))


# --- report parameters ------------------------------------------------------------------------------------

# per scorer: image (AUROC, AP) and pixel (AUROC, PRO) of dataset toy, setting zs
METRICS = {"faprompt": (0.9, 0.8, 0.95, 0.85), "anomalyclip": (0.7, 0.6, 0.75, 0.65), "winclip": (0.5, 0.4, 0.55, 0.45), "devprompt": (0.3, 0.2, 0.35, 0.25)}
REPORTS = {
    "default": {},
    "forward": {"compare_scorers": ["winclip", "anomalyclip"], "ablation": [{"label": "Baseline", "scorer": "anomalyclip"}, {"label": "Ours", "scorer": "faprompt"}]},
    "reversed": {"compare_scorers": ["anomalyclip", "winclip"]},
}


def pair(first: float, second: float) -> str:
    return f"({100 * first:.1f}, {100 * second:.1f})"


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Each case of :data:`REPORTS` written by the method's report step from one score file and hand-made metrics."""
    root = tmp_path_factory.mktemp("faprompt_report")
    rows = [
        {"dataset": "toy", "category": CATEGORY, "setting": "zs", "run": 0, "scorer": scorer, "metric": metric, "value": value, "weights": "random", "environment": "e"}
        for scorer, values in METRICS.items()
        for metric, value in zip(("image_auroc", "image_ap", "pixel_auroc", "pixel_pro"), values, strict=True)
    ]
    pd.DataFrame(rows).to_csv(root / "metrics.csv", index=False)
    scores = root / "scores.parquet"
    write_score_table(pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "score": [0.1, 0.9]}),
                      {"scorer": "faprompt", "method": "faprompt", "dataset": "toy", "category": CATEGORY, "setting": "zs", "run": 0, "weights": "random"}, scores)
    written = {}
    for case, params in REPORTS.items():
        filled = method_params(METHOD, {"train_dataset": "toy", **params})
        written[case] = root / case
        resolve(METHOD.report.write)(ReportContext(root / "metrics.csv", [scores], [], {}, filled, written[case], root / "plots"))
    return written


@pytest.mark.parametrize("case", list(REPORTS))
def test_compare_scorers_are_the_comparison_columns_in_their_order(reports, case):
    compare = REPORTS[case].get("compare_scorers", [])
    image, pixel = csv_table(reports[case] / "table1_image.csv"), csv_table(reports[case] / "table2_pixel.csv")
    for table, offset in ((image, 0), (pixel, 2)):
        assert list(table.columns) == ["dataset", "faprompt", *compare, "weights"]
        assert list(table["dataset"]) == ["toy", "mean"]
        for scorer in ["faprompt", *compare]:
            assert list(table[scorer]) == [pair(*METRICS[scorer][offset : offset + 2])] * 2, scorer


@pytest.mark.parametrize("case", list(REPORTS))
def test_the_ablation_rows_carry_their_labels_and_their_scorers_values(reports, case):
    table = csv_table(reports[case] / "table3_ablation.csv")
    rows = REPORTS[case].get("ablation") or [{"label": "faprompt", "scorer": "faprompt"}]  # [] = this instance alone
    assert list(table["model"]) == [row["label"] for row in rows] and list(table["scorer"]) == [row["scorer"] for row in rows]
    assert list(table["Image-level (AUROC, AP)"]) == [pair(*METRICS[row["scorer"]][:2]) for row in rows]
    assert list(table["Pixel-level (AUROC, PRO)"]) == [pair(*METRICS[row["scorer"]][2:]) for row in rows]
