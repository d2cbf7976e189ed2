"""One-to-Normal's studies through the workflow on the tiny preset: the pool built by the personalization process (and
the single-prompt ablation), the prompt study from generators that share one generator's models (models_from), and the
transfer table with every memory method without and with the pool in one run (random weights throughout)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsad.diffusion.personalize import ssim
from fsad.diffusion.prompt_sets import PHYSICAL, STATE

from .conftest import DEFAULT_CONFIG, merged, snakemake, write_config

pytestmark = pytest.mark.slow
TINY_GENERATOR = merged(DEFAULT_CONFIG["generators"]["tiny"], {
    "class_images": {"count": 2, "steps": 4}, "dreambooth": {"steps": 4},
    # the paper's pool process: 2 img2img images, each the SSIM choice among 3 state prompts x 2 candidates
    "pool": {"text_to_image": 1, "image_to_image": 2, "steps": 10, "candidates_per_prompt": 2}, "personalization": {"steps": 10},
})
TINY_TOKENS = DEFAULT_CONFIG["backbones"]["tiny_tokens"]
O2N = {"method": "one_to_normal", "backbone": "tiny_tokens", "settings": ["k1"], "datasets": ["textile"], "layers": [1, 2], "memory_size": 7,
       "train_dataset": "textile", "text_map_epochs": 1}
PAIRS = {  # without -> the instance with the pool (alike but for generator)
    # synthetic too: the anomalous memory's table 1 compares with WinCLIP+ on its dataset
    "winclip": {"method": "winclip", "backbone": "vitb16plus", "settings": ["k1"], "datasets": ["textile", "synthetic"], "prompt_preset": "paper"},
    "patchcore": {"method": "patchcore", "backbone": "tiny_cnn", "settings": ["k1"], "datasets": ["textile"]},
    "anomalydino": {"method": "anomalydino", "backbone": "tiny_dino", "settings": ["k1"], "datasets": ["textile"]},
    "promptad": {"method": "devprompt", "backbone": "vitb16plus", "settings": ["k1"], "datasets": ["textile"], "deviation_loss": False, "epochs": 1,
                 "vv_block": 2, "memory_blocks": [1, 2]},
    # one masked anomalous shot beside one normal shot (the pool fine-tunes on the normal one)
    "anomalous_memory": {"method": "anomalous_memory", "backbone": "vitb16plus", "settings": ["k1a1"], "datasets": ["synthetic"], "baseline_setting": "k1"},
}
OVERLAY = {
    "settings": [{"name": "k1", "normal_shots": 1, "anomalous_shots": 0, "validation_normals": 0},
                 {"name": "k1a1", "normal_shots": 1, "anomalous_shots": 1, "validation_normals": 1}],
    "backbones": {"tiny_tokens": TINY_TOKENS, "tiny_cnn": DEFAULT_CONFIG["backbones"]["tiny_cnn"], "tiny_dino": DEFAULT_CONFIG["backbones"]["tiny_dino"]},
    "generators": {
        "tiny": TINY_GENERATOR,
        # the prompt study: tiny's models and pool, Figure 5's physical templates, the first 1 and 3
        "tiny_p1": {**TINY_GENERATOR, "models_from": "tiny", "personalization": {"steps": 10, "prompts": "physical", "prompt_count": 1}},
        "tiny_p3": {**TINY_GENERATOR, "models_from": "tiny", "personalization": {"steps": 10, "prompts": "physical", "prompt_count": 3}},
        # the ablation: the pool's img2img under the instance prompt alone
        "tiny_single": merged(TINY_GENERATOR, {"pool": {"image_to_image_process": "single_prompt"}}),
    },
    "scorers": {
        "anomalous_memory": None,
        "one_to_normal": {**O2N, "generator": "tiny",
                          "transfer": [{"without": name, "with": f"{name}_pool"} for name in PAIRS],
                          "prompt_study": [{"label": "1 prompt", "scorer": "o2n_p1"}, {"label": "3 prompts", "scorer": "o2n_p3"}]},
        "o2n_p1": {**O2N, "generator": "tiny_p1"},
        "o2n_p3": {**O2N, "generator": "tiny_p3"},
        **PAIRS,
        **{f"{name}_pool": {**spec, "generator": "tiny"} for name, spec in PAIRS.items()},
        "winclip_single": {**PAIRS["winclip"], "datasets": ["textile"], "generator": "tiny_single"},
    },
}
RUN = "textile/textile/k1/run0"


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one_to_normal_studies")
    config = write_config(workdir / "studies.yaml", OVERLAY)
    snakemake(workdir, "--cores", "2", configfiles=(config,))
    return workdir / "results"


def _squared(path: str, side: int) -> Image.Image:
    return Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)


def test_the_pool_img2img_images_are_the_ssim_choice_among_the_prompt_sets_candidates(studied):
    pool = pd.read_csv(studied / f"pools/tiny/{RUN}/index.csv", keep_default_na=False)
    manifest = pd.read_csv(studied / "data/textile/manifest.csv").set_index("image_id")
    i2i = pool[pool["kind"] == "image_to_image"]
    assert len(i2i) == 2
    prompts = [t.format("textile") for t in STATE]
    for row in i2i.itertuples():
        candidates = [float(v) for v in row.candidate_ssims.split(";")]
        assert len(candidates) == 3 * 2 and float(row.ssim) == pytest.approx(max(candidates), abs=1e-6)
        # the prompt of the best candidate (seed by seed, prompt by prompt) is the one recorded
        assert row.prompt == prompts[int(np.argmax(candidates)) % 3]
        written = Image.open(studied / f"pools/tiny/{RUN}" / row.file).convert("RGB")
        assert ssim(_squared(manifest.at[row.source, "image_path"], 64), written) == pytest.approx(float(row.ssim), abs=1e-6)
    single = pd.read_csv(studied / f"pools/tiny_single/{RUN}/index.csv", keep_default_na=False)
    single_i2i = single[single["kind"] == "image_to_image"]
    assert set(single_i2i["prompt"]) == {"a photo of normal textile"} and (single_i2i["ssim"] == "").all()
    assert list(single_i2i["source"]) == list(i2i["source"])


def test_the_prompt_study_personalizes_from_the_shared_models_and_tabulates_each_instance(studied):
    assert not (studied / "models/tiny_p1").exists() and not (studied / "pools/tiny_p1").exists()  # tiny's, through models_from
    first = pd.read_csv(studied / f"personalized/tiny_p1/{RUN}/index.csv", keep_default_na=False, dtype={"candidate_ssims": str})
    assert set(first["prompt"]) == {PHYSICAL[0].format("textile")} and all(len(c.split(";")) == 1 for c in first["candidate_ssims"])
    three = pd.read_csv(studied / f"personalized/tiny_p3/{RUN}/index.csv", keep_default_na=False, dtype={"candidate_ssims": str})
    assert set(three["prompt"]) <= {t.format("textile") for t in PHYSICAL[:3]} and all(len(c.split(";")) == 3 for c in three["candidate_ssims"])
    # both read tiny's pool: the same S_N
    s_n = {name: pd.read_parquet(studied / f"scores/{name}/{RUN}.parquet").set_index("image_id")["s_n"] for name in ("o2n_p1", "o2n_p3", "one_to_normal")}
    pd.testing.assert_series_equal(s_n["o2n_p1"], s_n["o2n_p3"])
    metrics = pd.read_csv(studied / "metrics/metrics.csv")
    table = pd.read_csv(studied / "tables/one_to_normal/prompt_study.csv", dtype=str, keep_default_na=False).set_index("prompts")
    for label, scorer in (("1 prompt", "o2n_p1"), ("3 prompts", "o2n_p3")):
        for metric, column in (("image_auroc", "textile / I-AUROC"), ("image_ap", "textile / I-AUPRC")):
            value = metrics[(metrics["scorer"] == scorer) & (metrics["metric"] == metric)]["value"].item()
            assert table.loc[label, column] == f"{100 * value:.1f}"


def test_the_transfer_table_lists_every_memory_method_without_and_with_the_pool(studied):
    metrics = pd.read_csv(studied / "metrics/metrics.csv")
    table = pd.read_csv(studied / "tables/one_to_normal/transfer.csv", dtype=str, keep_default_na=False)
    assert set(table["pair"]) == {f"{name} -> {name}_pool" for name in PAIRS}
    for _, row in table.iterrows():
        without, with_ = row["pair"].split(" -> ")
        rows = metrics[(metrics["dataset"] == row["dataset"]) & (metrics["setting"] == row["setting"]) & (metrics["metric"] == "image_auroc")]
        values = {s: 100 * rows[rows["scorer"] == s]["value"].item() for s in (without, with_)}
        assert (row["without"], row["with"]) == (f"{values[without]:.1f}", f"{values[with_]:.1f}")
        assert float(row["change"]) == pytest.approx(round(values[with_] - values[without], 1), abs=0.051)
    # each pool-reading instance put the pool's 3 generated images among its references
    generated = ["t2i_0000", "i2i_0000", "i2i_0001"]
    details = lambda name, run="textile/textile/k1/run0": json.loads((studied / f"scores/{name}/{run}.json").read_text())["scorer_details"]  # noqa: E731
    assert details("patchcore_pool")["memory"]["references"] == 1 + 3 and details("patchcore")["memory"]["references"] == 1
    assert details("anomalous_memory_pool", "synthetic/textile/k1a1/run0")["generated_references"] == generated
    assert details("anomalous_memory", "synthetic/textile/k1a1/run0")["generated_references"] == []
    with_pool, alone = details("promptad_pool"), details("promptad")
    assert alone["generated_references"] == [] and with_pool["generated_references"] == generated
    assert {b: with_pool["gallery_sizes"][b] - alone["gallery_sizes"][b] for b in ("1", "2")} == {"1": 3 * 49, "2": 3 * 49}  # 7x7 patches each
