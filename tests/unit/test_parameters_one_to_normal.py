"""Every One-to-Normal parameter reaches its maths: each test runs the real fit and score orchestration of the tiny
world (its category renamed ``metal_nut``, so the class-name mode shows) with a non-default value and checks where
the numbers move (and, where the maths gives one, in which direction), and that the other outputs stay put.

The world's k1 run gets a hand-made pool and personalized images, encoded by the tiny CLIP as the workflow does:

- the pool's last generated image is a copy of the test image ``COPIED``, so its S_N is 0 once the memory reaches it;
- the test image ``SELF_PERSONALIZED`` is its own personalized image, so its S_P is 0.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fsad.backbones.loading import load_backbone
from fsad.diffusion.image_sets import IMAGE_TO_IMAGE, REFERENCE, TEXT_TO_IMAGE, generated_image_paths, write_image_set
from fsad.evaluation.collect import evaluate_run
from fsad.features.extract import update_store
from fsad.features.store import FeatureStore
from fsad.score_files import write_score_table
from fsad.scorers.fit import CategoryFiles
from fsad.scorers.method import ReportContext, resolve
from fsad.scorers.one_to_normal import fit as fit_module
from fsad.scorers.one_to_normal import report as report_module
from fsad.scorers.one_to_normal import scorer as scorer_module
from fsad.scorers.one_to_normal.method import METHOD
from fsad.scorers.one_to_normal.torch_model import branch_pair_columns
from fsad.scorers.registry import MethodError, method_params
from fsad.text import prompt_params

from .table_files import csv_table
from .tiny_world import LAYERS, TINY, WINDOW_SIZES, World, build_world

CATEGORY = "metal_nut"  # readable "metal nut", verbatim "metal_nut"
COPIED = "widget-test-spot-1"  # the pool's last generated image is a copy of it
SELF_PERSONALIZED = "widget-test-good-0"  # personalized into itself
FILLERS = ["widget-train-good-0", "widget-train-good-4"]  # normals outside the k1 references, the other generated images
LEVELS = {"layers": list(LAYERS)}  # the tiny world's blocks (the default names ViT-L-14's)
BASE_FIT = {**LEVELS, "text_map_epochs": 2}  # every other fit parameter at its default
BRANCHES = ["s_p", "s_n", "s_text"]

COVERED: dict[str, str] = {
    "one_to_normal.generator": "test_the_generator_names_the_generated_images_the_score_job_reads",
    "one_to_normal.layers": "test_the_layers_are_the_levels_of_every_branch_and_of_the_text_maps",
    "one_to_normal.alpha": "test_alpha_and_beta_weigh_their_own_branch_in_the_score_and_the_maps",
    "one_to_normal.beta": "test_alpha_and_beta_weigh_their_own_branch_in_the_score_and_the_maps",
    "one_to_normal.memory_size": "test_the_memory_size_cuts_the_pool_memory_of_s_n_only",
    "one_to_normal.prompt_preset": "test_a_text_parameter_reaches_the_prompt_embeddings_of_the_fit_and_of_s_text_only",
    "one_to_normal.temperature": "test_the_temperature_divides_the_margins_of_s_text_and_null_takes_the_presets",
    "one_to_normal.text_normalisation": "test_a_text_parameter_reaches_the_prompt_embeddings_of_the_fit_and_of_s_text_only",
    "one_to_normal.class_name_mode": "test_a_text_parameter_reaches_the_prompt_embeddings_of_the_fit_and_of_s_text_only",
    "one_to_normal.train_dataset": (
        "exempt: read by the workflow only (rules/common.smk train_dataset and fit_categories choose the fit's categories; "
        "the fit function never sees it): pinned by tests/workflow/test_methods.py::test_a_dataset_scoped_fit_trains_once_on_the_training_dataset "
        "and, that it stays out of the fit's maths, by test_the_training_dataset_is_a_fit_key_not_an_input_of_the_fit_maths"
    ),
    "one_to_normal.text_map_epochs": "test_the_epochs_set_the_number_of_passes_of_the_text_map_fit",
    "one_to_normal.text_map_lr": "test_the_learning_rate_reaches_the_optimiser_of_the_text_maps",
    "one_to_normal.text_map_batch_size": "test_the_batch_size_sets_the_rows_of_every_loss_step",
    "one_to_normal.text_map_focal_gamma": "test_the_focal_gamma_reaches_the_loss_and_a_larger_one_lowers_it",
    "one_to_normal.prompt_study": "test_the_prompt_study_table_lists_each_instance_under_its_label",
    "one_to_normal.prompt_study.label": "test_the_prompt_study_table_lists_each_instance_under_its_label",
    "one_to_normal.prompt_study.scorer": "test_the_prompt_study_table_lists_each_instance_under_its_label",
    "one_to_normal.transfer": "test_the_transfer_table_follows_the_configured_pairs_and_their_roles",
    "one_to_normal.transfer.with": "test_the_transfer_table_follows_the_configured_pairs_and_their_roles",
    "one_to_normal.transfer.without": "test_the_transfer_table_follows_the_configured_pairs_and_their_roles",
    "one_to_normal.gallery_categories": "test_the_gallery_shows_the_first_gallery_categories_of_each_dataset",
}


# --- the world ---------------------------------------------------------------------------------


def _renamed(world: World, category: str) -> World:
    """The world with its category renamed in the manifest, the pool and the splits (image ids keep their names)."""
    manifest = pd.read_csv(world.manifest, dtype=str, keep_default_na=False)
    manifest["category"] = category
    manifest.to_csv(world.manifest, index=False)
    for path in [world.pool, *world.splits.values()]:
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "category": category}))
    return world


def _copy(world: World, image_id: str, target: Path) -> Image.Image:
    path = pd.read_csv(world.manifest).set_index("image_id").at[image_id, "image_path"]
    shutil.copy(path, target)
    return Image.open(target).copy()


def _encode(directory: Path, store: Path) -> None:
    update_store(FeatureStore(store), load_backbone(TINY, "cpu"), generated_image_paths(directory), WINDOW_SIZES, layers=LAYERS)


def _generated(world: World) -> dict[str, Path]:
    """A k1 pool (reference, FILLERS, then a copy of COPIED) and personalized images, with their feature stores."""
    root = world.root / "generated"
    split = json.loads(world.splits["k1"].read_text())
    images = {}
    rows = [{"image_id": r, "kind": REFERENCE, "file": "", "source": r, "prompt": "", "seed": ""} for r in split["normal_refs"]]
    kinds = [TEXT_TO_IMAGE, IMAGE_TO_IMAGE, TEXT_TO_IMAGE]
    (root / "src").mkdir(parents=True)
    for n, (source, kind) in enumerate(zip([*FILLERS, COPIED], kinds)):
        name = f"g{n}"
        images[f"{name}.png"] = _copy(world, source, root / "src" / f"{name}.png")
        rows.append({"image_id": name, "kind": kind, "file": f"{name}.png", "source": "", "prompt": "p", "seed": n})
    write_image_set(root / "pool", pd.DataFrame(rows), images)

    rows, images = [], {}
    for n, image_id in enumerate(split["test"]):
        source = image_id if image_id == SELF_PERSONALIZED else f"widget-train-good-{n % 2 * 4}"
        images[f"{n}.png"] = _copy(world, source, root / "src" / f"p{n}.png")
        images[f"{n}.fixed.png"] = _copy(world, "widget-train-good-2", root / "src" / f"f{n}.png")
        rows.append({"image_id": image_id, "file": f"{n}.png", "prompt": "a photo of normal metal nut without flaw", "ssim": 0.5,
                     "candidate_ssims": "0.5", "fixed_file": f"{n}.fixed.png", "fixed_ssim": 0.4})
    write_image_set(root / "personalized", pd.DataFrame(rows), images)
    for kind in ("pool", "personalized"):
        _encode(root / kind, root / f"{kind}.h5")
    return {"generated_pool": root / "pool", "generated_pool_features": root / "pool.h5", "personalized": root / "personalized", "personalized_features": root / "personalized.h5"}


class O2N:
    """The renamed world with its generated images: fits and k1 scores of one_to_normal, memoised by parameters."""

    def __init__(self, root: Path):
        self.world = _renamed(build_world(root), CATEGORY)
        self.generated = _generated(self.world)
        self.files = CategoryFiles(self.world.dataset, CATEGORY, self.world.manifest, self.world.pool, self.world.store)
        self._fits: dict[str, Path] = {}
        self._scores: dict[str, pd.DataFrame] = {}

    def fit(self, **params) -> Path:
        key = repr(sorted({**BASE_FIT, **params}.items()))
        if key not in self._fits:
            self._fits[key] = self.world.fit("one_to_normal", {**BASE_FIT, **params}, setting=None, categories=[self.files],
                                             out=self.world.root / "models" / f"fit{len(self._fits)}")
        return self._fits[key]

    def score(self, model: Path | None = None, **params):
        model = model or self.fit()
        params = {**LEVELS, **params}
        key = repr((str(model), sorted(params.items())))
        if key not in self._scores:
            self._scores[key] = self.world.score("one_to_normal", params, setting="k1", model=model, generated=self.generated,
                                                 out=self.world.root / "scores" / f"s{len(self._scores)}")
        return self._scores[key]


@pytest.fixture(scope="module")
def o2n(tmp_path_factory) -> O2N:
    return O2N(tmp_path_factory.mktemp("o2n_params"))


def _frame(out) -> pd.DataFrame:
    return out.scores.set_index("image_id")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _info(path: Path) -> dict:
    return json.loads(path.with_name("fit.json").read_text())


def _same_tensors(a: Path, b: Path) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


# --- score weights and the memory -----------------------------------------------------------------


def test_alpha_and_beta_weigh_their_own_branch_in_the_score_and_the_maps(o2n):
    base = o2n.score()  # alpha 1, beta 0.5
    runs = {(a, b): o2n.score(alpha=a, beta=b) for a, b in ((0.3, 1.7), (0.3, 0.5), (1.0, 1.7), (0.0, 0.0))}
    ref = _frame(base)
    for (a, b), out in runs.items():
        frame = _frame(out)
        # the weights never touch a branch
        for column in [*BRANCHES, "s_p_fixed"]:
            np.testing.assert_array_equal(frame[column], ref[column])
        # eq. 7 with the configured values (alpha on S_N, beta on S_text: a swap gives other numbers at 0.3 / 1.7)
        np.testing.assert_allclose(frame["score"], ref["s_p"] + a * ref["s_n"] + b * ref["s_text"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(frame["score_fixed"], ref["s_p_fixed"] + a * ref["s_n"] + b * ref["s_text"], rtol=1e-5, atol=1e-6)
        # the branch ablation's pairs, with the same weights
        np.testing.assert_allclose(frame["branches:s_p+s_n"], ref["s_p"] + a * ref["s_n"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(frame["branches:s_p+s_text"], ref["s_p"] + b * ref["s_text"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(frame["branches:s_n+s_text"], a * ref["s_n"] + b * ref["s_text"], rtol=1e-5, atol=1e-6)
        assert out.details["scorer_details"]["alpha"] == a and out.details["scorer_details"]["beta"] == b
    assert ref.loc[COPIED, "s_n"] == pytest.approx(0, abs=1e-3) and (ref.drop(COPIED)["s_n"] > 0.01).all()

    ids = list(ref.index)
    copied, others = ids.index(COPIED), [i for i, name in enumerate(ids) if name != COPIED]
    maps = {key: out.maps.astype(np.float64) for key, out in runs.items()} | {(1.0, 0.5): base.maps.astype(np.float64)}
    tol = 2e-3  # float16 maps
    # alpha weighs the S_N map only: COPIED's S_N map is 0, so alpha leaves its map alone and lowers the others'
    lowered = maps[(1.0, 0.5)] - maps[(0.3, 0.5)]
    assert np.abs(lowered[copied]).max() < tol and (lowered[others].reshape(len(others), -1).min(axis=1) > -tol).all()
    assert (lowered[others].reshape(len(others), -1).mean(axis=1) > 0.01).all()
    # beta weighs the S_text map (a probability, > 0 everywhere): raising it raises every map, COPIED's included
    raised = maps[(1.0, 1.7)] - maps[(1.0, 0.5)]
    assert raised.min() > 0 and raised[copied].mean() > 0.01
    # the map is linear in the weights, alpha and beta apart
    np.testing.assert_allclose(maps[(0.3, 1.7)], maps[(0.3, 0.5)] + raised, atol=tol)
    # at alpha = beta = 0 the map is the S_P map: 0 for the image personalized into itself
    assert np.abs(maps[(0.0, 0.0)][ids.index(SELF_PERSONALIZED)]).max() < tol and maps[(0.0, 0.0)][others].max() > 0.01


def test_the_memory_size_cuts_the_pool_memory_of_s_n_only(o2n):
    sizes = {size: o2n.score(memory_size=size) for size in (1, 3, 4)}  # 1 reference, then 3 generated images
    assert [sizes[s].details["scorer_details"]["memory"] for s in (1, 3, 4)] == [
        {"references": 1, "generated": 0}, {"references": 1, "generated": 2}, {"references": 1, "generated": 3}]
    frames = {s: _frame(out) for s, out in sizes.items()}
    for column in ("s_p", "s_text"):
        np.testing.assert_array_equal(frames[1][column], frames[4][column])
    # a larger memory never raises a nearest-neighbour distance; only the last image (COPIED's copy) zeroes COPIED
    assert (frames[4]["s_n"] <= frames[3]["s_n"] + 1e-6).all() and (frames[3]["s_n"] <= frames[1]["s_n"] + 1e-6).all()
    assert frames[3].loc[COPIED, "s_n"] > 0.01 and frames[4].loc[COPIED, "s_n"] == pytest.approx(0, abs=1e-3)
    assert (frames[3]["s_n"] < frames[1]["s_n"] - 1e-6).any()  # the fillers entered the memory at 3
    np.testing.assert_array_equal(frames[4]["s_n"], _frame(o2n.score())["s_n"])  # the default 30 holds all 4


def test_the_generator_names_the_generated_images_the_score_job_reads():
    declared = METHOD.generated(_params(generator="sd_custom"))
    assert (declared.generator, declared.pool, declared.personalized) == ("sd_custom", True, True)
    config = {"scorers": {"wc": {"method": "winclip"}, "wc_pool": {"method": "winclip", "generator": "other"}}}
    pair = [{"without": "wc", "with": "wc_pool"}]
    assert "does not read generator 'sd_custom'" in METHOD.check(_params(generator="sd_custom", transfer=pair), config)
    assert METHOD.check(_params(generator="other", transfer=pair), config) is None


def _params(**values):
    return method_params(METHOD, values)


# --- parameters of the fit and of the score --------------------------------------------------------


def test_the_layers_are_the_levels_of_every_branch_and_of_the_text_maps(o2n):
    fitted = o2n.fit(layers=[2])
    assert sorted(_tensors(fitted)) == ["text_map.2.bias", "text_map.2.weight"] and _info(fitted)["details"]["levels"] == [2]
    assert sorted(_tensors(o2n.fit())) == ["text_map.1.bias", "text_map.1.weight", "text_map.2.bias", "text_map.2.weight"]
    # the base model holds both levels' maps, so each level can be scored alone: every branch's image score is the
    # mean over levels of the per-level one (eqs. 4-6)
    both, one, two = (_frame(o2n.score(layers=layers)) for layers in ([1, 2], [1], [2]))
    for column in BRANCHES:
        np.testing.assert_allclose(both[column], (one[column] + two[column]) / 2, rtol=1e-5, atol=1e-6)
        assert not np.allclose(one[column], two[column])


def test_the_temperature_divides_the_margins_of_s_text_and_null_takes_the_presets(o2n):
    fitted = o2n.fit(temperature=0.3)
    assert not _same_tensors(fitted, o2n.fit())  # the fit's margins are divided by it too
    model = o2n.fit(layers=[2])
    runs = {t: _frame(o2n.score(model, layers=[2], temperature=t)) for t in (0.2, 0.7)}
    for column in ("s_p", "s_n"):
        np.testing.assert_array_equal(runs[0.2][column], runs[0.7][column])
    # one level: s_text = sigmoid(max margin / T), so logit(s_text) * T is the same margin at every temperature
    logit = {t: np.log(f["s_text"]) - np.log1p(-f["s_text"]) for t, f in runs.items()}
    np.testing.assert_allclose(logit[0.2] * 0.2, logit[0.7] * 0.7, rtol=1e-3, atol=1e-5)
    assert (np.abs(logit[0.2]) > np.abs(logit[0.7])).all()  # a lower temperature sharpens the probabilities
    # null takes the paper preset's 0.01
    np.testing.assert_array_equal(_frame(o2n.score(model, layers=[2]))["s_text"], _frame(o2n.score(model, layers=[2], temperature=0.01))["s_text"])


TEXT_CASES = {
    "prompt_preset": ("anomalib", {"preset": "anomalib"}),
    "text_normalisation": ("raw_mean", {"normalisation": "raw_mean"}),
    "class_name_mode": ("verbatim", {"class_name": "metal_nut"}),
}
TEXT_DEFAULTS = {"preset": "paper", "normalisation": None, "class_name": "metal nut"}


@pytest.mark.parametrize("name", list(TEXT_CASES))
def test_a_text_parameter_reaches_the_prompt_embeddings_of_the_fit_and_of_s_text_only(o2n, name, monkeypatch):
    value, expected = TEXT_CASES[name]
    calls, entered = [], []
    original = prompt_params.text_embeddings

    def spy(encode, class_name, preset="paper", normalisation=None):
        calls.append({"where": entered[-1], "class_name": class_name, "preset": preset, "normalisation": normalisation})
        return original(encode, class_name, preset, normalisation)

    monkeypatch.setattr(prompt_params, "text_embeddings", spy)
    for module in (fit_module, scorer_module):  # which step asks for the embeddings (through the shared opening)

        def opening(*args, _opening=module.class_text_embeddings, _where=module.__name__, **kwargs):
            entered.append(_where.rsplit(".", 1)[-1])
            return _opening(*args, **kwargs)

        monkeypatch.setattr(module, "class_text_embeddings", opening)
    fitted = o2n.fit(**{name: value})
    changed = o2n.score(fitted, **{name: value})
    # the value reaches the prompt embeddings of both the fit and the score (the other text parameters at defaults)
    assert {c["where"] for c in calls} == {"fit", "scorer"}
    assert all(c == {"where": c["where"], **TEXT_DEFAULTS, **expected} for c in calls), calls
    assert not _same_tensors(fitted, o2n.fit())
    # with the base model, S_text alone moves: the prompts are S_text's only
    base, other = _frame(o2n.score()), _frame(o2n.score(**{name: value}))
    np.testing.assert_array_equal(base["s_p"], other["s_p"])
    np.testing.assert_array_equal(base["s_n"], other["s_n"])
    assert not np.allclose(base["s_text"], other["s_text"])
    assert not np.allclose(_frame(changed)["s_text"], other["s_text"])  # and the fit trained under them too


def test_the_epochs_set_the_number_of_passes_of_the_text_map_fit(o2n):
    two, three = o2n.fit(), o2n.fit(text_map_epochs=3)
    assert len(_info(two)["loss_per_epoch"]) == 2 and len(_info(three)["loss_per_epoch"]) == 3
    # the same seed: the first two epochs are the same, the third moves the maps further
    assert _info(three)["loss_per_epoch"][:2] == _info(two)["loss_per_epoch"]
    assert not _same_tensors(two, three)


def _recording_adamw(monkeypatch) -> list[torch.optim.Optimizer]:
    made = []
    base = torch.optim.AdamW

    class Recording(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    return made


def test_the_learning_rate_reaches_the_optimiser_of_the_text_maps(o2n, monkeypatch):
    made = _recording_adamw(monkeypatch)
    fast = o2n.fit(text_map_lr=3e-2)
    (optimizer,) = made
    assert optimizer.param_groups[0]["lr"] == 3e-2
    # same initial maps and batches: the larger step takes the maps further from where the default one ends up
    tensors, base = _tensors(fast), _tensors(o2n.fit())
    assert not _same_tensors(fast, o2n.fit())
    slow = o2n.fit(text_map_lr=1e-5)
    moved = {name: (tensors[name] - _tensors(slow)[name]).norm() for name in tensors}
    assert all(moved[name] > (base[name] - _tensors(slow)[name]).norm() for name in tensors)


def _recording_loss(monkeypatch) -> list[dict]:
    calls = []
    original = fit_module.text_score_focal_loss

    def spy(margins, labels, gamma):
        loss = original(margins, labels, gamma)
        calls.append({"rows": margins.shape[0], "gamma": gamma, "loss": loss.item()})
        return loss

    monkeypatch.setattr(fit_module, "text_score_focal_loss", spy)
    return calls


def test_the_batch_size_sets_the_rows_of_every_loss_step(o2n, monkeypatch):
    calls = _recording_loss(monkeypatch)
    fitted = o2n.fit(text_map_batch_size=3)
    images = len(json.loads(o2n.world.pool.read_text())["normal_pool"]) + 1 + 5  # the pool's normals, anomaly, test images
    assert _info(fitted)["details"]["images"] == images
    per_epoch = [3] * (images // 3) + ([images % 3] if images % 3 else [])
    assert [c["rows"] for c in calls] == per_epoch * 2
    assert not _same_tensors(fitted, o2n.fit())


def test_the_focal_gamma_reaches_the_loss_and_a_larger_one_lowers_it(o2n, monkeypatch):
    calls = _recording_loss(monkeypatch)
    o2n.fit(text_map_focal_gamma=0.5)
    low = list(calls)
    calls.clear()
    o2n.fit(text_map_focal_gamma=4.0)
    assert {c["gamma"] for c in low} == {0.5} and {c["gamma"] for c in calls} == {4.0}
    # the first step sees the same maps and batch: the focal factor (1 - p_t)^gamma < 1 shrinks the loss as gamma grows
    assert calls[0]["loss"] < low[0]["loss"]


def test_fit_only_parameters_change_no_score_of_a_given_model(o2n):
    base = _frame(o2n.score())
    changed = _frame(o2n.score(text_map_epochs=7, text_map_lr=0.5, text_map_batch_size=2, text_map_focal_gamma=0.0, train_dataset="toy"))
    pd.testing.assert_frame_equal(base, changed)


def test_score_and_report_parameters_never_reach_the_fit():
    base = METHOD.fit_params(_params())
    changed = METHOD.fit_params(_params(alpha=0.2, beta=2.0, memory_size=3, generator="g", gallery_categories=1,
                                        transfer=[{"without": "a", "with": "b"}]))
    assert base == changed
    fit_only = {"text_map_epochs": 3, "text_map_lr": 0.1, "text_map_batch_size": 2, "text_map_focal_gamma": 1.0, "train_dataset": "x"}
    assert {k: METHOD.fit_params(_params(**fit_only))[k] for k in fit_only} == fit_only


def test_the_training_dataset_is_a_fit_key_not_an_input_of_the_fit_maths(o2n):
    assert METHOD.fit.scope == "dataset" and "train_dataset" in METHOD.stage_names("fit")
    assert _same_tensors(o2n.fit(train_dataset="toy"), o2n.fit())


# --- report parameters --------------------------------------------------------------------------------

LABELS = [0, 0, 1, 1]


def _score_file(root: Path, category: str, setting: str = "k2", alpha: float = 1.0, beta: float = 0.5) -> tuple[Path, Path]:
    """Four test images: S_P ranks them right by a margin of 1, S_N and S_text wrong by 1 (a weight above 1 wins)."""
    path = root / f"scores/o2n/d/{category}/{setting}/run0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(4):
        image = root / f"{category}{i}.png"
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(image)
        images.append(str(image))
    frame = pd.DataFrame({
        "image_id": [f"{category}{i}" for i in range(4)], "image_path": images, "label": LABELS, "defect_type": ["good", "good", "hole", "hole"],
        "score": [0.0, 1.0, 2.0, 3.0], "s_p": [0.0, 1.0, 2.0, 3.0], "s_n": [3.0, 2.0, 1.0, 0.0], "s_text": [3.0, 2.0, 1.0, 0.0], "weights": "random",
    })
    frame = frame.assign(**branch_pair_columns({b: frame[b].to_numpy() for b in BRANCHES}, alpha, beta))  # as the scorer writes them
    write_score_table(frame, {"scorer": "o2n", "method": "one_to_normal", "dataset": "d", "category": category, "setting": setting, "run": 0, "weights": "random"}, path)
    details = path.with_suffix(".json")
    shown = {f"{category}{i}": {"file": images[3 - i], "prompt": "p", "ssim": 0.5, "fixed_file": ""} for i in range(4)}
    details.write_text(json.dumps({"dataset": "d", "category": category, "setting": setting, "run": 0, "weights": "random",
                                   "scorer_details": {"personalized": shown}}))
    return path, details


def _metrics(root: Path, values: dict[str, float], score_files: list[Path]) -> Path:
    """Hand-made image metrics, and the sub-score rows of ``score_files`` from the metrics code."""
    rows = [{"dataset": "d", "category": c, "setting": "k2", "run": 0, "scorer": scorer, "metric": metric, "value": value, "weights": "random", "environment": "e"}
            for scorer, value in values.items() for c in ("bolt", "wood") for metric in ("image_auroc", "image_ap")]
    sub_scores = [row for path in score_files for row in evaluate_run(path, None, map_size=8, fpr_limit=0.3) if ":" in row["metric"]]
    path = root / "metrics.csv"
    pd.DataFrame(rows + sub_scores).assign(environment="e").to_csv(path, index=False)
    return path


def _report(root: Path, monkeypatch, **params) -> list[pd.DataFrame]:
    """Write the report of two categories; returns the examples the gallery was drawn from."""
    drawn = []
    monkeypatch.setattr(report_module, "gallery_figure", lambda examples, personalized, path, title: drawn.append(examples) or Path(path))
    filled = _params(**params)
    files = [_score_file(root, c, alpha=filled["alpha"], beta=filled["beta"]) for c in ("wood", "bolt")]
    metrics = _metrics(root, {"o2n": 0.75, "wc": 0.8, "wc_pool": 0.9}, [s for s, _ in files])
    ctx = ReportContext(metrics_csv=metrics, score_files=[s for s, _ in files],
                        detail_files=[d for _, d in files], manifests={}, tables_dir=root / "tables", figures_dir=root / "plots", params=filled)
    resolve(METHOD.report.write)(ctx)
    return drawn


def test_the_branch_ablation_rows_are_the_score_files_pairs_weighted_by_alpha_and_beta(tmp_path, monkeypatch):
    _report(tmp_path, monkeypatch, alpha=0.5, beta=2.0)
    table = csv_table(tmp_path / "tables/branch_ablation.csv").set_index("branches")["d"]
    # S_P + 0.5 S_N still ranks right; S_P + 2 S_text ranks wrong; a swap of alpha and beta flips both
    assert (table["S_P + S_N"], table["S_P + S_text"]) == ("100.0", "0.0")
    assert (table["S_P"], table["S_N"], table["S_text"]) == ("100.0", "0.0", "0.0")
    _report(tmp_path / "swapped", monkeypatch, alpha=2.0, beta=0.5)
    swapped = csv_table(tmp_path / "swapped/tables/branch_ablation.csv").set_index("branches")["d"]
    assert (swapped["S_P + S_N"], swapped["S_P + S_text"]) == ("0.0", "100.0")


def test_the_transfer_table_follows_the_configured_pairs_and_their_roles(tmp_path, monkeypatch):
    _report(tmp_path, monkeypatch, transfer=[{"without": "wc", "with": "wc_pool"}, {"without": "wc_pool", "with": "wc"}])
    table = csv_table(tmp_path / "tables/transfer.csv").set_index("pair")
    assert list(table.index) == ["wc -> wc_pool", "wc_pool -> wc"]
    assert table.loc["wc -> wc_pool", ["without", "with", "change"]].tolist() == ["80.0", "90.0", "10.0"]
    assert table.loc["wc_pool -> wc", ["without", "with", "change"]].tolist() == ["90.0", "80.0", "-10.0"]
    _report(tmp_path / "none", monkeypatch)
    assert "no transfer pairs" in (tmp_path / "none/tables/transfer.csv").read_text()


def test_the_prompt_study_table_lists_each_instance_under_its_label(tmp_path, monkeypatch):
    study = [{"label": "3 prompts", "scorer": "wc_pool"}, {"label": "1 prompt", "scorer": "wc"}]
    _report(tmp_path, monkeypatch, prompt_study=study)
    table = csv_table(tmp_path / "tables/prompt_study.csv")
    # rows in the study's order; per dataset the I-AUROC and I-AUPRC of each instance (the hand-made metrics: 90 and 80)
    assert list(table.columns) == ["setting", "prompts", "d / I-AUROC", "d / I-AUPRC", "weights"]
    assert table.iloc[:, :4].values.tolist() == [["k2", "3 prompts", "90.0", "90.0"], ["k2", "1 prompt", "80.0", "80.0"]]
    _report(tmp_path / "none", monkeypatch)
    assert "no prompt study" in (tmp_path / "none/tables/prompt_study.csv").read_text()


def test_the_prompt_study_and_transfer_checks_refuse_instances_that_differ_in_more_than_their_variable():
    generators = {"g3": {"base_model": "tiny", "personalization": {"prompts": "physical", "prompt_count": 3}},
                  "g1": {"base_model": "tiny", "personalization": {"prompts": "physical", "prompt_count": 1}}}
    o2n = {"method": "one_to_normal", "backbone": "b", "layers": [1, 2]}
    config = {"generators": generators, "scorers": {"p3": {**o2n, "generator": "g3"}, "p1": {**o2n, "generator": "g1"}, "wc": {"method": "winclip"}}}
    study = [{"label": "1", "scorer": "p1"}, {"label": "3", "scorer": "p3"}]
    assert METHOD.check(_params(generator="g3", prompt_study=study), config) is None
    assert "not a one_to_normal instance" in METHOD.check(_params(generator="g3", prompt_study=[{"label": "w", "scorer": "wc"}]), config)
    other_layers = {**config, "scorers": {**config["scorers"], "p1": {**o2n, "generator": "g1", "layers": [2]}}}
    assert "differ in more than" in METHOD.check(_params(generator="g3", prompt_study=study), other_layers)
    other_steps = {**config, "generators": {**generators, "g1": {**generators["g1"], "pool": {"steps": 9}}}}
    assert "personalization.prompts/prompt_count" in METHOD.check(_params(generator="g3", prompt_study=study), other_steps)
    # transfer: the pair alike but for the pool, the with-instance's method reading one
    pairs = {"wc": {"method": "winclip", "window_sizes": [2]}, "wc_pool": {"method": "winclip", "window_sizes": [2], "generator": "g3"},
             "wc_wide": {"method": "winclip", "window_sizes": [3], "generator": "g3"}, "fa": {"method": "faprompt", "train_dataset": "x"}, "fa_pool": {"method": "faprompt", "train_dataset": "x", "generator": "g3"}}
    check = lambda without, with_: METHOD.check(_params(generator="g3", transfer=[{"without": without, "with": with_}]), {"scorers": pairs})  # noqa: E731
    assert check("wc", "wc_pool") is None
    assert "alike but for" in check("wc", "wc_wide")
    assert "alike but for" in check("wc_pool", "wc_pool")  # the without-instance reads no pool
    with pytest.raises(MethodError, match="'generator' was unexpected"):  # faprompt has no reference memory, so no generator key
        check("fa", "fa_pool")


def test_the_gallery_shows_the_first_gallery_categories_of_each_dataset(tmp_path, monkeypatch):
    (one,) = _report(tmp_path, monkeypatch, gallery_categories=1)
    (default,) = _report(tmp_path / "default", monkeypatch)
    assert set(one["category"]) == {"bolt"}  # sorted: bolt before wood
    assert set(default["category"]) == {"bolt", "wood"}
