"""One-to-Normal through the workflow: DreamBooth, pool, personalization, their features, the triplet score, the
transfer to WinCLIP+, the report; and what a changed generation parameter reruns."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fsad.features.store import FeatureStore

from .conftest import DEFAULT_CONFIG, merged, snakemake, write_config
from .test_reruns import pending, summary, write_overlay

pytestmark = pytest.mark.slow
OVERLAY = {
    "backbones": {"tiny_tokens": DEFAULT_CONFIG["backbones"]["tiny_tokens"]},
    "generators": {
        "tiny": merged(DEFAULT_CONFIG["generators"]["tiny"], {"class_images": {"count": 2, "steps": 4}, "dreambooth": {"steps": 4},
                       "pool": {"text_to_image": 2, "image_to_image": 1, "steps": 10}, "personalization": {"steps": 10}}),
    },
    "scorers": {
        "winclip": None,
        "anomalous_memory": None,
        # the text maps fit on the target dataset itself here: a wiring test, not the paper's auxiliary-dataset protocol
        "one_to_normal": {**DEFAULT_CONFIG["scorers"]["one_to_normal"], "train_dataset": "textile", "text_map_epochs": 1},
        # WinCLIP+ with the pool among its references (the transfer experiment; its table is unit-tested)
        "winclip_pool": {"method": "winclip", "backbone": "tiny_tokens", "settings": ["k1"], "datasets": ["textile"], "generator": "tiny"},
    },
}
RUN = "tiny/textile/textile/k1/run0"


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one_to_normal")
    overlay = write_config(workdir / "one_to_normal.yaml", OVERLAY)
    snakemake(workdir, "--cores", "2", configfiles=(overlay,))
    return workdir, overlay


def test_the_run_writes_the_model_pool_personalized_images_their_features_and_the_reports(generated_run):
    workdir, _ = generated_run
    results = workdir / "results"
    model = results / "models" / RUN
    info = json.loads((model / "dreambooth.json").read_text())
    assert (model / "unet/diffusion_pytorch_model.safetensors").is_file() and len(info["loss_per_step"]) == 4 and info["class_images"] == 2
    # a diffusers pipeline directory: the base's model_index.json, the trained UNet, links to the base's other components
    base = results / "models/tiny/base_model"
    assert json.loads((model / "model_index.json").read_text()) == json.loads((base / "model_index.json").read_text())
    assert not (model / "unet").is_symlink() and all((model / c).is_symlink() and (model / c).resolve() == (base / c).resolve()
                                                     for c in ("vae", "text_encoder", "tokenizer", "scheduler"))
    assert len(list((results / "models/tiny/textile/textile/class_images").glob("*.png"))) == 2

    pool = pd.read_csv(results / "pools" / RUN / "index.csv", keep_default_na=False)
    assert list(pool["kind"]) == ["reference", "text_to_image", "image_to_image", "text_to_image"]
    personalized = pd.read_csv(results / "personalized" / RUN / "index.csv", keep_default_na=False)
    scores = pd.read_parquet(results / "scores/one_to_normal/textile/textile/k1/run0.parquet")
    assert list(personalized["image_id"]) == list(scores["image_id"])
    assert all((results / "personalized" / RUN / name).is_file() for name in [*personalized["file"], *personalized["fixed_file"]])
    assert {"s_p", "s_n", "s_text", "s_p_fixed", "score_fixed"} <= set(scores.columns)

    (store_path,) = (results / "cache/features").glob(f"tiny_tokens-*/personalized/{RUN}.h5")
    store = FeatureStore(store_path)
    assert len(store.image_ids()) == 2 * len(personalized) and store.layers == [1, 2]
    (pool_path,) = (results / "cache/features").glob(f"tiny_tokens-*/pools/{RUN}.h5")
    pool_store = FeatureStore(pool_path)  # generated images only (the references are in the dataset's store), windows for winclip_pool
    assert pool_store.image_ids() == ["i2i_0000", "t2i_0000", "t2i_0001"] and pool_store.window_sizes == [2, 3]

    for table in ("kshot", "branch_ablation", "prompt_ablation", "transfer"):
        assert (results / f"tables/one_to_normal/{table}.md").stat().st_size > 0
    assert pd.read_parquet(results / "scores/winclip_pool/textile/textile/k1/run0.parquet")["memory_patch"].notna().all()
    assert (results / "plots/one_to_normal/gallery.png").stat().st_size > 0


def _pending_by_rule(workdir, overlay, change) -> dict[str, list[str]]:
    table = pending(summary(workdir, overlay, write_overlay(workdir / "change.yaml", change)))
    return {rule: sorted(rows["output_file"]) for rule, rows in table.groupby("rule")}


def test_a_changed_pool_parameter_reruns_the_pool_and_its_readers_but_not_dreambooth(generated_run):
    workdir, overlay = generated_run
    rules = _pending_by_rule(workdir, overlay, {"generators": {"tiny": {"pool": {"guidance_scale": 5.0}}}})
    assert not set(rules) & {"base_model", "dreambooth", "class_images", "personalize", "fit_run", "fit_dataset", "extract_features", "draw_split"}
    assert rules["generate_pool"] == [f"results/pools/{RUN}"]
    assert all("/pools/" in path for path in rules["extract_generated_features"])
    scored = {path.split("/")[2] for path in rules["score"]}
    assert scored == {"one_to_normal", "winclip_pool"}


def test_a_changed_personalization_parameter_reruns_personalization_and_one_to_normal_only(generated_run):
    workdir, overlay = generated_run
    rules = _pending_by_rule(workdir, overlay, {"generators": {"tiny": {"personalization": {"strength": 0.4}}}})
    assert not set(rules) & {"base_model", "dreambooth", "class_images", "generate_pool", "fit_run", "fit_dataset"}
    assert rules["personalize"] == [f"results/personalized/{RUN}"]
    assert {path.split("/")[2] for path in rules["score"]} == {"one_to_normal"}

