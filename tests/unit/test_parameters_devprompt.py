"""Every ``devprompt`` parameter (PromptAD is ``deviation_loss: false``) reaches its maths, through the real
orchestration (:func:`fsad.scorers.fit.run_fit`, :func:`fsad.scorers.run.run_scorer`) on the tiny world.

* Loss weights: one-epoch fits, whose recorded terms are those of the initial prompts (the same for every weight, as
  the initial state never depends on one), so each weight's term moves by the factor or offset its formula gives and
  the other terms stay put.
* Optimiser, reference, synthetic-anomaly and scoring knobs: one fit with every such value non-default and distinct
  (a swap shows), spying on the library calls (``torch.optim.SGD`` steps, the loss functions, the generators).
* Score-side knobs: the score step against scores computed here from the stored features, then one knob at a time on
  the same model, checking which columns and maps move and which do not.
* Report knobs: the report tables' columns and cells follow them.

The backbone loader is memoised for the module (it rebuilds the same seeded random tiny model on every call), so a
fit costs its training, not the tokenizer's construction.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from scipy import ndimage
from torch.nn import functional as F

from fsad.data.splits import read_split
from fsad.features.store import FeatureStore
from fsad.score_files import write_score_table
from fsad.scorers.devprompt import anomalies as anomalies_module
from fsad.scorers.devprompt import fit as fit_module
from fsad.scorers.devprompt import training as training_module
from fsad.scorers.devprompt.method import METHOD
from fsad.scorers.devprompt.prompt_texts import CLASS_ABNORMAL_STATES
from fsad.scorers.method import ReportContext, resolve
from fsad.scorers.registry import method_params
from fsad.text.class_names import READABLE_NAMES

from .tiny_world import CATEGORY, World, build_world, write_pool

OWNER = "devprompt"
LOSSES = "test_each_loss_weight_scales_only_its_own_term_and_zero_removes_it"
DEVIATION_TERM = "test_the_deviation_term_follows_lambda_dev_and_margin"
SGD = "test_sgd_steps_with_the_configured_lr_momentum_weight_decay_and_cosine_floor_over_the_epochs"
LOSS_ARGUMENTS = "test_the_training_losses_receive_the_configured_margins_weights_and_logit_scale"
SCORING = "test_the_score_step_is_the_configured_top_k_deviation_of_the_chosen_tokens"
PLACES = "test_each_score_side_parameter_moves_only_its_own_outputs"
ANOMALIES = "test_the_synthetic_anomalies_follow_count_types_and_min_patches_on_the_split_normal_shot"
PROMPTS = "test_the_prompt_parameters_reach_the_tokenized_prompts_and_the_context_vectors"
REPORT = "test_the_report_tables_follow_compare_with_sensitivity_and_its_metric"
FULL_PROMPTAD = "test_memory_blocks_and_cls_prompts_add_the_visual_memory_and_the_image_level_model"

COVERED: dict[str, str] = {
    f"{OWNER}.deviation_loss": "test_deviation_loss_false_is_promptad_without_deviation_tensors_terms_or_columns",
    f"{OWNER}.n_ctx": PROMPTS,
    f"{OWNER}.n_prompts": PROMPTS,
    f"{OWNER}.n_abnormal_ctx": PROMPTS,
    f"{OWNER}.n_learned_abnormal": PROMPTS,
    f"{OWNER}.normal_states": PROMPTS,
    f"{OWNER}.abnormal_states": PROMPTS,
    f"{OWNER}.class_states": PROMPTS,
    f"{OWNER}.class_name_mode": PROMPTS,
    f"{OWNER}.vv_block": "test_the_fit_trains_on_the_vv_tokens_of_its_normal_shot_and_anomalies",
    f"{OWNER}.memory_blocks": FULL_PROMPTAD,
    f"{OWNER}.cls_prompts": FULL_PROMPTAD,
    f"{OWNER}.generator": "test_the_generator_and_its_count_add_the_pool_images_to_the_visual_galleries_at_scoring_time",
    f"{OWNER}.generated_references": "test_the_generator_and_its_count_add_the_pool_images_to_the_visual_galleries_at_scoring_time",
    f"{OWNER}.logit_scale": LOSS_ARGUMENTS,
    f"{OWNER}.deviation_score": SCORING,
    f"{OWNER}.lambda_dev": DEVIATION_TERM,
    f"{OWNER}.deviation_average": DEVIATION_TERM,
    f"{OWNER}.topk_ratio": "test_a_smaller_topk_ratio_raises_the_training_deviations",
    f"{OWNER}.margin": DEVIATION_TERM,
    f"{OWNER}.reference_draws": "test_the_reference_statistics_come_from_the_configured_number_of_draws",
    f"{OWNER}.synthetic_anomalies": ANOMALIES,
    f"{OWNER}.defect_types": ANOMALIES,
    f"{OWNER}.min_defect_patches": "test_an_unreachable_min_defect_patches_stops_the_fit",
    f"{OWNER}.epochs": SGD,
    f"{OWNER}.lr": SGD,
    f"{OWNER}.momentum": SGD,
    f"{OWNER}.weight_decay": SGD,
    f"{OWNER}.lr_min": SGD,
    f"{OWNER}.promptad_weight": LOSSES,
    f"{OWNER}.alignment_weight": LOSSES,
    f"{OWNER}.triplet_margin": "test_the_triplet_margin_shifts_every_patch_hinge",
    f"{OWNER}.smoothing_sigma": PLACES,
    f"{OWNER}.compare_with": REPORT,
    f"{OWNER}.sensitivity.lambda_dev": REPORT,
    f"{OWNER}.sensitivity.topk_ratio": REPORT,
    f"{OWNER}.sensitivity.margin": REPORT,
    f"{OWNER}.sensitivity_metric": REPORT,
    f"{OWNER}.sub_scores": "test_sub_scores_add_the_instances_branches_to_the_image_table",
}

# One-epoch fits on two synthetic anomalies: the recorded terms are those of the initial prompts.
BASE = {"epochs": 1, "synthetic_anomalies": 2}
# Every optimiser, reference, anomaly and scoring knob non-default and distinct from its neighbours.
SPIED = {
    "epochs": 2, "lr": 0.03, "momentum": 0.6, "weight_decay": 0.002, "lr_min": 0.0004, "logit_scale": 7.5, "vv_block": 2,
    "deviation_score": "contrast", "topk_ratio": 0.3, "lambda_dev": 0.25, "margin": 3.5, "triplet_margin": 0.75,
    "reference_draws": 7, "synthetic_anomalies": 3, "defect_types": ["noise", "spot"], "min_defect_patches": 12, "smoothing_sigma": 1.5,
}


# --- the world, fits and spies ---------------------------------------------------------------------------------


@dataclass
class Fitted:
    params: dict[str, Any]
    model: Path
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]

    @property
    def terms(self) -> dict[str, float]:
        return self.info["details"]["final_terms"]

    @property
    def deviations(self) -> dict[str, np.ndarray]:
        return {name: np.array(values) for name, values in self.info["details"]["training_deviations"].items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from fsad.backbones import loading

    real, built = loading.load_backbone, {}

    def memoised(spec, device=None, weights_fallback="error", seed=0, weights=None):
        key = (repr(sorted(spec.items())), str(device), weights_fallback, seed, weights)
        if key not in built:
            built[key] = real(spec, device, weights_fallback, seed, weights)
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "load_backbone", memoised)
        yield build_world(tmp_path_factory.mktemp("devprompt_world"))


def run_fit(world: World, params: dict[str, Any], name: str) -> Fitted:
    model = world.fit(OWNER, params, setting="k1", out=world.root / "models" / name)
    info = json.loads((model.parent / "fit.json").read_text())
    return Fitted(params, model, load_file(str(model)), info)


@pytest.fixture(scope="module")
def fits(world):
    """Fits by name, each run once."""
    table = {
        "base": BASE,
        # every PromptAD weight non-default and apart; W2 moves the two margins, W3 sets lambda to 0
        "w1": {**BASE, "promptad_weight": 0.5, "alignment_weight": 0.04, "lambda_dev": 0.3, "margin": 40.0, "triplet_margin": 9.0},
        "w2": {**BASE, "promptad_weight": 0.5, "alignment_weight": 0.04, "lambda_dev": 0.3, "margin": 46.0, "triplet_margin": 12.0},
        "w3": {**BASE, "promptad_weight": 0.5, "alignment_weight": 0.04, "lambda_dev": 0.0, "margin": 40.0, "triplet_margin": 9.0},
        # the class-balanced average of the deviation loss, W1's and W2's weights
        "b1": {**BASE, "promptad_weight": 0.5, "alignment_weight": 0.04, "lambda_dev": 0.3, "margin": 40.0, "triplet_margin": 9.0,
               "deviation_average": "balanced"},
        "b2": {**BASE, "promptad_weight": 0.5, "alignment_weight": 0.04, "lambda_dev": 0.3, "margin": 46.0, "triplet_margin": 12.0,
               "deviation_average": "balanced"},
        "no_promptad": {**BASE, "promptad_weight": 0.0},
        "promptad": {**BASE, "deviation_loss": False},
        "top1": {**BASE, "topk_ratio": 0.02},
    }
    done: dict[str, Fitted] = {}

    def get(name: str) -> Fitted:
        if name not in done:
            done[name] = run_fit(world, table[name], name)
        return done[name]

    return get


def spy(patch: pytest.MonkeyPatch, owner: Any, name: str, calls: dict[str, list]) -> None:
    """Wrap ``owner.name``: each call's bound arguments (defaults applied) and result go to ``calls[name]``."""
    real = getattr(owner, name)
    signature = inspect.signature(real)

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        calls.setdefault(name, []).append({**bound.arguments, "result": result})
        return result

    patch.setattr(owner, name, wrapper)


@pytest.fixture(scope="module")
def spied(world):
    """The SPIED fit with its library calls recorded: ``(Fitted, calls)``; ``calls["sgd_steps"]`` the SGD param groups per step."""
    from fsad.backbones import window_embeddings

    calls: dict[str, list] = {"sgd_steps": []}

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            group = self.param_groups[0]
            calls["sgd_steps"].append({key: group[key] for key in ("lr", "momentum", "weight_decay")})
            return super().step(closure)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim, "SGD", RecordingSGD)
        for name in ("visual_to_text_loss", "triplet_loss", "deviation_loss", "devprompt_scores", "similarity_score", "top_k_count"):
            spy(patch, training_module, name, calls)
        for name in ("reference_statistics", "synthetic_anomalies", "train_prompts"):
            spy(patch, fit_module, name, calls)
        spy(patch, anomalies_module, "add_defect", calls)
        spy(patch, window_embeddings, "encode_images", calls)
        fitted = run_fit(world, SPIED, "spied")
    return fitted, calls


def stored(world: World, ids: list[str]):
    return FeatureStore(world.store).load(ids)


def project(tokens: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    return F.normalize(tokens @ proj, dim=-1)


def patch_count(world: World) -> int:
    return stored(world, read_split(world.splits["k1"]).test[:1]).patch_tokens.shape[1]


# --- loss weights (one-epoch fits: the terms of the initial prompts) -----------------------------------------------


def test_each_loss_weight_scales_only_its_own_term_and_zero_removes_it(fits):
    base, w1, none = fits("base").terms, fits("w1").terms, fits("no_promptad").terms
    # promptad_weight 0.5 halves the cross-entropy; the alignment term carries 0.5 and 0.04 / 0.001 (swapped: 0.04 and 500)
    assert w1["visual_to_text"] == pytest.approx(0.5 * base["visual_to_text"], rel=1e-5)
    assert w1["alignment"] == pytest.approx(0.5 * (0.04 / 0.001) * base["alignment"], rel=1e-4)
    # promptad_weight 0: PromptAD's three terms leave the objective, the deviation term is untouched
    assert set(none) == {"deviation"} and none["deviation"] == pytest.approx(base["deviation"], rel=1e-6)
    assert fits("no_promptad").info["loss_per_epoch"][0] == pytest.approx(base["deviation"], abs=1e-5)


def test_the_triplet_margin_shifts_every_patch_hinge(fits):
    w1, w2 = fits("w1").terms, fits("w2").terms
    # margins of 9 and 12 exceed any |z - p|^2 - |z - n|^2 of unit vectors (at most 4), so no hinge clips:
    # the mean moves by promptad_weight * (12 - 9)
    assert w2["triplet"] - w1["triplet"] == pytest.approx(0.5 * 3.0, rel=1e-4)
    assert fits("base").terms["triplet"] < w1["triplet"]  # margin 0 clips, 9 shifts every patch up
    for other in ("visual_to_text", "alignment"):
        assert w2[other] == w1[other]


def test_the_deviation_term_follows_lambda_dev_and_margin(fits):
    for name, lam, margin in (("base", 1.0, 5.0), ("w1", 0.3, 40.0), ("w2", 0.3, 46.0), ("w3", 0.0, 40.0)):
        fitted = fits(name)
        normal, anomalous = fitted.deviations["initial_normal"], fitted.deviations["initial_anomalous"]
        terms = np.concatenate([lam * np.abs(normal), np.clip(margin - anomalous, 0, None)])
        assert fitted.terms["deviation"] == pytest.approx(terms.mean(), rel=1e-5), name  # Eq. 8, the plain batch mean
    for name, lam, margin in (("b1", 0.3, 40.0), ("b2", 0.3, 46.0)):
        fitted = fits(name)
        normal, anomalous = fitted.deviations["initial_normal"], fitted.deviations["initial_anomalous"]
        expected = (lam * np.abs(normal).mean() + np.clip(margin - anomalous, 0, None).mean()) / 2  # classes averaged
        assert fitted.terms["deviation"] == pytest.approx(expected, rel=1e-5), name
    # one normal shot and two anomalies: margin 40 -> 46 lifts the hinge of every anomaly by 6, 2 * 6 / 3 in the batch
    # mean and 6 / 2 in the balanced one; lambda 0.3 -> 0 drops the normal term, 0.3 * D / 3 of the batch mean
    assert len(fits("w1").deviations["initial_normal"]) == 1 and len(fits("w1").deviations["initial_anomalous"]) == 2
    assert fits("w2").terms["deviation"] - fits("w1").terms["deviation"] == pytest.approx(4.0, rel=1e-5)
    assert fits("b2").terms["deviation"] - fits("b1").terms["deviation"] == pytest.approx(3.0, rel=1e-5)
    assert fits("w1").terms["deviation"] - fits("w3").terms["deviation"] == pytest.approx(0.1 * fits("w1").deviations["initial_normal"].mean(), rel=1e-4)
    assert fits("w1").deviations["initial_normal"].mean() > 0.1


def test_a_smaller_topk_ratio_raises_the_training_deviations(fits):
    top1, base = fits("top1").deviations, fits("base").deviations
    # K = max(int(P * 0.02), 1) = 1 keeps the largest patch deviation, never below the top-4 mean of the default 10 %
    for group in ("initial_normal", "initial_anomalous"):
        assert np.all(top1[group] >= base[group] - 1e-6) and np.any(top1[group] > base[group] + 1e-4), group
    assert fits("top1").terms["deviation"] != fits("base").terms["deviation"]
    assert fits("top1").terms["visual_to_text"] == fits("base").terms["visual_to_text"]


def test_deviation_loss_false_is_promptad_without_deviation_tensors_terms_or_columns(world, fits):
    promptad, base = fits("promptad"), fits("base")
    assert set(promptad.terms) == {"visual_to_text", "triplet", "alignment"}
    for name in promptad.terms:
        assert promptad.terms[name] == pytest.approx(base.terms[name], rel=1e-6)
    assert not {"log_scale", "bias", "reference_mean", "reference_std"} & set(promptad.tensors)
    assert {"log_scale", "bias", "reference_mean", "reference_std"} <= set(base.tensors)
    assert "synthetic_anomalies" not in promptad.info["details"]
    out = world.score(OWNER, promptad.params, model=promptad.model)
    assert "deviation_max" not in out.scores
    np.testing.assert_array_equal(out.scores["score"], out.scores["textual_global"])
    assert out.maps.min() >= 0 and out.maps.max() <= 1  # softmax maps, not deviations
    # the score step's own deviation_loss chooses the readout, even of a model that holds the scoring parameters
    readout = world.score(OWNER, {**base.params, "deviation_loss": False}, model=base.model)
    assert "deviation_max" not in readout.scores
    np.testing.assert_array_equal(readout.scores["score"], readout.scores["textual_global"])
    assert "deviation_max" in world.score(OWNER, base.params, model=base.model).scores


# --- the spied fit: optimiser, losses, reference, anomalies, tokens --------------------------------------------------


def test_sgd_steps_with_the_configured_lr_momentum_weight_decay_and_cosine_floor_over_the_epochs(spied):
    fitted, calls = spied
    assert len(fitted.info["loss_per_epoch"]) == 2
    # CosineAnnealingLR over T = epochs = 2: step 0 at lr, step 1 halfway down to lr_min
    lrs = [0.03, 0.0004 + (0.03 - 0.0004) * (1 + np.cos(np.pi / 2)) / 2]
    assert calls["sgd_steps"] == [{"lr": pytest.approx(lr, rel=1e-9), "momentum": 0.6, "weight_decay": 0.002} for lr in lrs]


def test_the_training_losses_receive_the_configured_margins_weights_and_logit_scale(spied):
    fitted, calls = spied
    assert [c["logit_scale"] for c in calls["visual_to_text_loss"]] == [7.5, 7.5]
    assert [c["margin"] for c in calls["triplet_loss"]] == [0.75, 0.75]
    assert [(c["margin"], c["normal_weight"]) for c in calls["deviation_loss"]] == [(3.5, 0.25), (3.5, 0.25)]
    assert float(fitted.tensors["logit_scale"]) == 7.5 and fitted.info["details"]["logit_scale"] == 7.5


def test_the_reference_statistics_come_from_the_configured_number_of_draws(spied):
    fitted, calls = spied
    (call,) = calls["reference_statistics"]
    assert call["n_draws"] == 7
    mean, std = call["result"]
    assert float(fitted.tensors["reference_mean"]) == float(mean) and float(fitted.tensors["reference_std"]) == float(std)
    # every deviation the fit scores is taken against that reference
    assert all(float(c["mu"]) == float(mean) and float(c["sigma"]) == float(std) for c in calls["devprompt_scores"])


def test_the_synthetic_anomalies_follow_count_types_and_min_patches_on_the_split_normal_shot(world, spied):
    fitted, calls = spied
    (call,) = calls["synthetic_anomalies"]
    defects = call["result"]
    grid = int(np.sqrt(patch_count(world)))
    assert call["count"] == 3 and call["defect_types"] == ["noise", "spot"] and call["min_patches"] == 12 and call["grid"] == grid
    assert [d.defect_type for d in defects] == ["noise", "spot", "noise"]
    assert {c["defect_type"] for c in calls["add_defect"]} == {"noise", "spot"}
    for defect in defects:
        rows, cols = np.nonzero(defect.mask)
        cells = {(r * grid // defect.mask.shape[0], c * grid // defect.mask.shape[1]) for r, c in zip(rows, cols)}
        assert len(cells) >= 12
    # made from the run's normal shot (the split's, not any other image), unchanged outside each defect
    split = read_split(world.splits["k1"])
    paths = pd.read_csv(world.manifest).set_index("image_id")["image_path"]
    shot = np.asarray(Image.open(paths[split.normal_refs[0]]).convert("RGB"))
    assert len(call["shots"]) == 1 and np.array_equal(call["shots"][0], shot)
    for defect in defects:
        assert np.array_equal(defect.image[~defect.mask], shot[~defect.mask])
    assert fitted.info["details"]["synthetic_anomalies"] == 3 and len(fitted.deviations["initial_anomalous"]) == 3


def test_an_unreachable_min_defect_patches_stops_the_fit(world):
    cells = patch_count(world)
    with pytest.raises(ValueError, match=f"min_defect_patches {cells + 1}"):
        world.fit(OWNER, {**BASE, "defect_types": ["spot"], "synthetic_anomalies": 1, "min_defect_patches": cells + 1},
                  out=world.root / "models" / "unreachable")


def test_the_fit_trains_on_the_vv_tokens_of_its_normal_shot_and_anomalies(world, spied):
    fitted, calls = spied
    (train,) = calls["train_prompts"]
    split = read_split(world.splits["k1"])
    features = stored(world, split.normal_refs)
    proj = fitted.tensors["visual_proj"]
    torch.testing.assert_close(train["normal_patches"], project(features.vv_layers[2], proj))
    assert not torch.allclose(train["normal_patches"], project(features.patch_tokens, proj))
    # the synthetic anomalies are encoded with the V-V path of block 2, and trained on with its tokens
    assert [tuple(c["vv_layers"]) for c in calls["encode_images"]] == [(2,)]
    assert train["anomalous_patches"].shape == (3, features.patch_tokens.shape[1], proj.shape[1])


def test_the_training_scores_use_the_configured_k_and_similarity(world, spied):
    _, calls = spied
    k = max(int(patch_count(world) * 0.3), 1)
    assert {c["k"] for c in calls["devprompt_scores"]} == {k} and {c["kind"] for c in calls["devprompt_scores"]} == {"contrast"}
    assert [c["kind"] for c in calls["similarity_score"]] == ["contrast"]  # the calibration of the scoring parameters


# --- the score step ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spied_scores(world, spied):
    fitted, _ = spied
    return world.score(OWNER, SPIED, model=fitted.model)


def test_the_score_step_is_the_configured_top_k_deviation_of_the_chosen_tokens(world, spied, spied_scores):
    fitted, _ = spied
    model, scores = fitted.tensors, spied_scores.scores
    features = stored(world, list(scores["image_id"]))
    cosines = project(features.vv_layers[2], model["visual_proj"]) @ model["text_prototypes"].T
    contrast = cosines[..., 1] - cosines[..., 0]
    deviations = (model["log_scale"].exp() * contrast + model["bias"] - model["reference_mean"]).abs() / model["reference_std"]
    k = max(int(deviations.shape[1] * 0.3), 1)
    np.testing.assert_allclose(scores["score"], deviations.topk(k, dim=-1).values.mean(dim=-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores["deviation_max"], deviations.amax(dim=-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores["textual_max"], (7.5 * cosines).softmax(dim=-1)[..., 1].amax(dim=-1).numpy(), rtol=1e-5)
    image = F.normalize(features.image_embeddings, dim=-1) @ model["text_prototypes"].T
    np.testing.assert_allclose(scores["textual_global"], (7.5 * image).softmax(dim=-1)[..., 1].numpy(), rtol=1e-5)


SUB_SCORES = ["score", "deviation_max", "textual_global", "textual_max"]


@pytest.mark.parametrize(
    ("change", "moved"),
    [
        ({"vv_block": None}, {"score", "deviation_max", "textual_max", "maps"}),
        ({"deviation_score": "abnormal"}, {"score", "deviation_max", "maps"}),
        ({"topk_ratio": 0.01}, {"score"}),
        ({"smoothing_sigma": 0.0}, {"maps"}),
        # fit-only parameters: the score step never reads them (it takes logit_scale from the model)
        ({"lambda_dev": 0.9, "margin": 2.0, "lr": 0.5, "epochs": 9, "promptad_weight": 0.1, "n_ctx": 2, "reference_draws": 50,
          "logit_scale": 3.0}, set()),
    ],
    ids=["vv_block", "deviation_score", "topk_ratio", "smoothing_sigma", "fit_only"],
)
def test_each_score_side_parameter_moves_only_its_own_outputs(world, spied, spied_scores, change, moved):
    fitted, _ = spied
    out = world.score(OWNER, {**SPIED, **change}, model=fitted.model)
    for column in SUB_SCORES:
        same = np.allclose(out.scores[column], spied_scores.scores[column], rtol=1e-6, atol=1e-7)
        assert same == (column not in moved), column
    assert np.array_equal(out.maps, spied_scores.maps) == ("maps" not in moved)
    if "topk_ratio" in change:  # K = 1: the largest patch deviation, at least the top-K mean
        np.testing.assert_array_equal(out.scores["score"], out.scores["deviation_max"])
        assert np.all(out.scores["score"] >= spied_scores.scores["score"])
    if "smoothing_sigma" in change:  # sigma 1.5 is scipy's Gaussian of the unsmoothed maps (stored as float16)
        assert "smoothing_sigma" not in METHOD.stage_names("fit")
        smoothed = ndimage.gaussian_filter(out.maps.astype(np.float64), sigma=(0, 1.5, 1.5))
        np.testing.assert_allclose(spied_scores.maps, smoothed, atol=2e-3 * float(out.maps.max()))
        assert out.maps.max() > spied_scores.maps.max()


# --- prompts -------------------------------------------------------------------------------------------------------

PROMPT_PARAMS = {"deviation_loss": False, "epochs": 1, "n_ctx": 3, "n_prompts": 2, "n_abnormal_ctx": 5, "n_learned_abnormal": 6,
                 "normal_states": ["flawless {}", "clean {}"], "abnormal_states": ["cracked {}", "{} with a hole"]}


@pytest.fixture(scope="module")
def prompt_fits(world):
    """Two fits with the prompt knobs non-default, recording the tokenized texts (normal, handcrafted, learned)."""
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        # the tiny world's category gets a readable name and class-specific defect phrases
        patch.setitem(READABLE_NAMES, CATEGORY, "blue widget")
        patch.setitem(CLASS_ABNORMAL_STATES, CATEGORY, ("{} with a dent",))
        for name, extra in (("readable", {}), ("verbatim", {"class_states": False, "class_name_mode": "verbatim"})):
            calls: dict[str, list] = {}
            with pytest.MonkeyPatch.context() as inner:
                spy(inner, fit_module, "tokenize_with_placeholders", calls)
                fitted = run_fit(world, {**PROMPT_PARAMS, **extra}, f"prompts-{name}")
            out[name] = fitted, [c["prompts"] for c in calls["tokenize_with_placeholders"]]
    return out


def test_the_prompt_parameters_reach_the_tokenized_prompts_and_the_context_vectors(prompt_fits, fits):
    readable, readable_texts = prompt_fits["readable"]
    verbatim, verbatim_texts = prompt_fits["verbatim"]
    ctx = "X X X"
    assert readable_texts == [
        [f"{ctx} flawless blue widget."] * 2 + [f"{ctx} clean blue widget."] * 2,
        [f"{ctx} cracked blue widget."] * 2 + [f"{ctx} blue widget with a hole."] * 2 + [f"{ctx} blue widget with a dent."] * 2,
        [f"{ctx} Y Y Y Y Y blue widget."] * 12,
    ]
    assert verbatim_texts == [
        [f"{ctx} flawless widget."] * 2 + [f"{ctx} clean widget."] * 2,
        [f"{ctx} cracked widget."] * 2 + [f"{ctx} widget with a hole."] * 2,
        [f"{ctx} Y Y Y Y Y widget."] * 12,
    ]
    width = fits("base").tensors["normal_ctx"].shape[-1]
    assert tuple(readable.tensors["normal_ctx"].shape) == (2, 3, width)  # (n_prompts, n_ctx, W)
    assert tuple(readable.tensors["abnormal_ctx"].shape) == (6, 5, width)  # (n_learned_abnormal, n_abnormal_ctx, W)
    # other texts, other prototypes
    assert not torch.allclose(readable.tensors["text_prototypes"], verbatim.tensors["text_prototypes"])


# --- the report ----------------------------------------------------------------------------------------------------

REPORT_VALUES = {  # scorer -> pixel AUROC of category widget (image AUROC is pixel - 0.2)
    "dp": 0.61, "alpha": 0.72, "beta": 0.83, "lam_a": 0.54, "k_b": 0.45, "m_c": 0.96, "unnamed": 0.37,
}


def test_the_report_tables_follow_compare_with_sensitivity_and_its_metric(tmp_path):
    rows = [
        {"dataset": "toy", "category": CATEGORY, "setting": "k1", "run": 0, "scorer": scorer, "metric": metric,
         "value": value - (0.2 if metric == "image_auroc" else 0), "weights": "random", "environment": "torch"}
        for scorer, value in REPORT_VALUES.items() for metric in ("pixel_auroc", "image_auroc")
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    keys = {"scorer": "dp", "method": OWNER, "dataset": "toy", "category": CATEGORY, "setting": "k1", "run": 0, "weights": "random"}
    write_score_table(pd.DataFrame({"image_id": ["a"], "score": [1.0]}), keys, tmp_path / "run0.parquet")
    params = method_params(METHOD, {
        "compare_with": ["beta", "alpha"], "sensitivity_metric": "image_auroc", "lambda_dev": 0.5, "topk_ratio": 0.15, "margin": 7.0,
        "sensitivity": {"lambda_dev": {"lam_a": 0.3}, "topk_ratio": {"k_b": 0.2}, "margin": {"m_c": 3.0}},
    })
    resolve(METHOD.report.write)(ReportContext(metrics_csv=tmp_path / "metrics.csv", score_files=[tmp_path / "run0.parquet"], detail_files=[],
                                               manifests={}, params=params, tables_dir=tmp_path / "tables", figures_dir=tmp_path / "plots"))

    def cells(table: str) -> dict[str, str]:
        frame = pd.read_csv(tmp_path / "tables" / f"{table}.csv", dtype=str, keep_default_na=False)
        row = frame[frame["category"] == CATEGORY].iloc[0]
        return {column: row[column] for column in frame.columns if column not in ("dataset", "setting", "category", "weights")}

    pct = lambda scorer, metric: f"{100 * (REPORT_VALUES[scorer] - (0.2 if metric == 'image' else 0)):.2f}"  # noqa: E731
    # compare_with: its instances, in its order, then this one; per-category tables keep their own metric
    assert cells("pixel_auroc") == {"beta": pct("beta", "pixel"), "alpha": pct("alpha", "pixel"), "dp": pct("dp", "pixel")}
    assert cells("image_auroc") == {"beta": pct("beta", "image"), "alpha": pct("alpha", "image"), "dp": pct("dp", "image")}
    # each sensitivity entry in its own table, by increasing value, this instance labelled by its own value;
    # sensitivity_metric image_auroc fills them with image AUROC
    assert cells("sensitivity_lambda") == {"λ = 0.3": pct("lam_a", "image"), "λ = 0.5": pct("dp", "image")}
    assert cells("sensitivity_topk") == {"K = 15 %": pct("dp", "image"), "K = 20 %": pct("k_b", "image")}
    assert cells("sensitivity_margin") == {"a = 3": pct("m_c", "image"), "a = 7": pct("dp", "image")}


def test_sub_scores_add_the_instances_branches_to_the_image_table(tmp_path):
    rows = [
        {"dataset": "mvtec_ad", "category": "bottle", "setting": "k1", "run": run, "scorer": scorer, "metric": metric, "value": value,
         "weights": "w", "environment": "e"}
        for scorer, metric, values in (
            ("promptad", "image_auroc", [0.80, 0.90]), ("promptad", "pixel_auroc", [0.70, 0.70]),
            ("promptad", "image_auroc:textual_global", [0.60, 0.70]), ("promptad", "image_auroc:visual_max", [0.95, 0.85]),
            ("winclip", "image_auroc", [0.50, 0.50]), ("winclip", "pixel_auroc", [0.40, 0.40]),
        )
        for run, value in enumerate(values)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    keys = {"scorer": "promptad", "method": "devprompt", "dataset": "mvtec_ad", "category": "bottle", "setting": "k1", "run": 0, "weights": "w"}
    write_score_table(pd.DataFrame({"image_id": ["a"], "score": [1.0]}), keys, tmp_path / "run0.parquet")
    params = method_params(METHOD, {"deviation_loss": False, "compare_with": ["winclip"], "sub_scores": ["textual_global", "visual_max"]})
    resolve(METHOD.report.write)(ReportContext(metrics_csv=tmp_path / "metrics.csv", score_files=[tmp_path / "run0.parquet"], detail_files=[], manifests={},
                               params=params, tables_dir=tmp_path / "tables", figures_dir=tmp_path / "plots"))
    image = pd.read_csv(tmp_path / "tables" / "image_auroc.csv", dtype=str, keep_default_na=False)
    assert list(image.columns) == ["dataset", "setting", "category", "winclip", "promptad", "promptad: textual_global", "promptad: visual_max", "weights"]
    assert image.loc[0, ["winclip", "promptad", "promptad: textual_global", "promptad: visual_max"]].tolist() == [
        "50.00 ± 0.00", "85.00 ± 5.00", "65.00 ± 5.00", "90.00 ± 5.00"]
    pixel = pd.read_csv(tmp_path / "tables" / "pixel_auroc.csv", dtype=str, keep_default_na=False)
    assert list(pixel.columns) == ["dataset", "setting", "category", "winclip", "promptad", "weights"]


# --- full PromptAD: the visual memory and the image-level model ---------------------------------------------------


def test_memory_blocks_and_cls_prompts_add_the_visual_memory_and_the_image_level_model(world, fits):
    from fsad.features.extract import update_store
    from fsad.backbones.loading import load_backbone
    from .tiny_world import TINY

    store = FeatureStore(world.store)
    ids = store.image_ids()
    paths = pd.read_csv(world.manifest).set_index("image_id")["image_path"]
    # the states inside blocks 1 and 2 join the cached images (the workflow's feature job adds what memory_blocks asks)
    update_store(store, load_backbone(TINY, "cpu"), {i: paths[i] for i in ids}, store.window_sizes, layers=store.layers,
                 vv_layers=store.vv_layers, mid_layers=[1, 2])
    text_only = fits("promptad")
    full = run_fit(world, {**BASE, "deviation_loss": False, "memory_blocks": [1, 2], "cls_prompts": 2}, "promptad-full")
    tensors = full.tensors
    # the segmentation prompts are those of text-only PromptAD; the image-level model has its own 2 context sets
    torch.testing.assert_close(tensors["text_prototypes"], text_only.tensors["text_prototypes"])
    assert tuple(tensors["cls_normal_ctx"].shape[:1]) == (2,) and tuple(text_only.tensors["normal_ctx"].shape[:1]) == (1,)
    split = read_split(world.splits["k1"])
    shots = store.load(list(split.normal_refs), mid_layers=[1, 2])
    for n in (1, 2):
        torch.testing.assert_close(tensors[f"memory_{n}"], F.normalize(shots.mid_layers[n].reshape(-1, shots.mid_layers[n].shape[-1]), dim=-1))

    params = {**BASE, "deviation_loss": False, "memory_blocks": [1, 2], "cls_prompts": 2, "smoothing_sigma": 0.0}
    out = world.score(OWNER, params, model=full.model)
    plain = world.score(OWNER, {**BASE, "deviation_loss": False, "smoothing_sigma": 0.0}, model=text_only.model)
    assert {"score", "textual_global", "textual_max", "visual_max"} <= set(out.scores.columns)
    assert "visual_max" not in plain.scores.columns
    np.testing.assert_allclose(out.scores["textual_max"], plain.scores["textual_max"], rtol=1e-6)
    test = store.load(list(out.scores["image_id"]), mid_layers=[1, 2])
    t = tensors["logit_scale"]
    cls = (t * F.normalize(test.image_embeddings, dim=-1) @ tensors["cls_text_prototypes"].T).softmax(dim=-1)[:, 1]
    np.testing.assert_allclose(out.scores["textual_global"], cls.numpy(), rtol=1e-5)
    grid = test.grid
    visual = sum((1 - F.normalize(test.mid_layers[n], dim=-1) @ tensors[f"memory_{n}"].T).min(dim=-1).values / 2 for n in (1, 2)) / 2
    up = lambda m: F.interpolate(m.reshape(-1, 1, grid, grid), size=(world.map_size,) * 2, mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
    visual_max = up(visual).amax(dim=(1, 2))
    np.testing.assert_allclose(out.scores["visual_max"], visual_max.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.scores["score"], (1 / (1 / visual_max + 1 / cls)).numpy(), rtol=1e-5)
    textual = (t * F.normalize(test.patch_tokens @ tensors["visual_proj"], dim=-1) @ tensors["text_prototypes"].T).softmax(dim=-1)[..., 1]
    # the maps are stored as float16
    np.testing.assert_allclose(out.maps, up(1 / (1 / textual + 1 / visual)).numpy(), rtol=2e-3, atol=1e-4)


def test_the_generator_and_its_count_add_the_pool_images_to_the_visual_galleries_at_scoring_time(world):
    """PromptAD's visual memory with the k1 run's pool (``g0`` an unused train normal, ``g1`` a copy of an anomalous test
    image): the galleries are the fitted normal shot's tokens, then the pool images', in pool order; the fitted prompts
    and the textual columns do not move; the copied test image's visual map is 0."""
    from fsad.backbones.loading import load_backbone
    from fsad.features.extract import update_store
    from .tiny_world import TINY

    declared = METHOD.generated(world.params(OWNER, {"deviation_loss": False, "memory_blocks": [1, 2], "generator": "gen_p"}))
    assert (declared.generator, declared.pool, declared.personalized) == ("gen_p", True, False)
    assert "generator" not in METHOD.fit_params(world.params(OWNER, {"generator": "gen_p"}))  # a pool never reruns the fit
    assert "memory_blocks" in METHOD.check(world.params(OWNER, {"deviation_loss": False, "generator": "gen_p"}), {"scorers": {}})
    store = FeatureStore(world.store)
    paths = pd.read_csv(world.manifest).set_index("image_id")["image_path"]
    update_store(store, load_backbone(TINY, "cpu"), {i: paths[i] for i in store.image_ids()}, store.window_sizes, layers=store.layers,
                 vv_layers=store.vv_layers, mid_layers=[1, 2])
    pool = write_pool(world, mid_layers=[1, 2], name="gen_p")
    generated = {"generated_pool": pool["generated_pool"], "generated_pool_features": pool["generated_pool_features"]}
    params = {**BASE, "deviation_loss": False, "memory_blocks": [1, 2], "smoothing_sigma": 0.0}
    fitted = run_fit(world, params, "promptad-memory")
    alone = world.score(OWNER, params, model=fitted.model).scores.set_index("image_id")
    split = read_split(world.splits["k1"])
    pool_tokens = FeatureStore(pool["generated_pool_features"]).load(["g0", "g1"], window_sizes=[], mid_layers=[1, 2])
    for count in (1, None):
        out = world.score(OWNER, {**params, "generator": "gen_p", "generated_references": count}, model=fitted.model, generated=generated,
                          out=world.root / "scores" / f"promptad-pool-{count}")
        joined = out.scores.set_index("image_id")
        n = 2 if count is None else 1
        assert out.details["scorer_details"]["generated_references"] == ["g0", "g1"][:n]
        pd.testing.assert_series_equal(joined["textual_global"], alone["textual_global"])
        pd.testing.assert_series_equal(joined["textual_max"], alone["textual_max"])
        test = store.load(list(split.test), mid_layers=[1, 2])
        galleries = {b: torch.cat([fitted.tensors[f"memory_{b}"], F.normalize(pool_tokens.mid_layers[b][:n].reshape(-1, pool_tokens.mid_layers[b].shape[-1]), dim=-1)])
                     for b in (1, 2)}
        assert out.details["scorer_details"]["gallery_sizes"] == {str(b): len(g) for b, g in galleries.items()}
        visual = sum((1 - F.normalize(test.mid_layers[b], dim=-1) @ galleries[b].T).min(dim=-1).values / 2 for b in (1, 2)) / 2
        grid = test.grid
        up = F.interpolate(visual.reshape(-1, 1, grid, grid), size=(world.map_size,) * 2, mode="bilinear", align_corners=False)[:, 0]
        np.testing.assert_allclose(joined.loc[list(split.test), "visual_max"], up.amax(dim=(1, 2)).numpy(), rtol=1e-5, atol=1e-7)
        assert (joined["visual_max"] <= alone["visual_max"] + 1e-7).all()
        assert (joined.loc[pool["copy_of"], "visual_max"] < 1e-5) == (count is None)
