"""Few-shot splits: fixed test subsets, disjoint references, determinism."""

import pandas as pd
import pytest

from fsad.data.splits import draw_pool, draw_split, pool_image_ids


def make_manifest(n_train=12, n_test_normal=30, n_test_anomalous=10, category="cat"):
    rows = []
    for i in range(n_train):
        rows.append((f"{category}-train-good-{i:03d}", category, "train", 0, "good", f"/x/tr{i}.png", ""))
    for i in range(n_test_normal):
        rows.append((f"{category}-test-good-{i:03d}", category, "test", 0, "good", f"/x/tn{i}.png", ""))
    for i in range(n_test_anomalous):
        rows.append((f"{category}-test-crack-{i:03d}", category, "test", 1, "crack", f"/x/ta{i}.png", f"/x/ta{i}_mask.png"))
    return pd.DataFrame(rows, columns=["image_id", "category", "split", "label", "defect_type", "image_path", "mask_path"])


def pool_of(manifest, **kw):
    args = dict(dataset="d", category="cat", seed=0, max_test=20, normal_pool=4, anomalous_pool=3) | kw
    return draw_pool(manifest, **args)


K1 = {"name": "k1", "normal_shots": 1, "anomalous_shots": 0, "validation_normals": 0}
A1 = {"name": "a1", "normal_shots": 0, "anomalous_shots": 1, "validation_normals": 1}


def test_test_subset_is_capped_and_stratified_by_label():
    manifest = make_manifest()
    pool = pool_of(manifest)
    labels = manifest.set_index("image_id").loc[pool["test"], "label"]
    assert len(pool["test"]) == 20
    # 7 anomalies remain after the anomalous pool takes 3 of 10: 7/37 of 20 is about 4
    assert labels.sum() == round(20 * 7 / 37)


def test_pools_never_overlap_the_test_subset():
    pool = pool_of(make_manifest())
    assert not set(pool["test"]) & (set(pool["normal_pool"]) | set(pool["anomalous_pool"]))
    assert all("train" in i for i in pool["normal_pool"])
    assert len(pool["anomalous_pool"]) == 3


def test_identical_inputs_give_identical_pools_and_splits():
    manifest = make_manifest()
    shuffled = manifest.sample(frac=1.0, random_state=1)
    assert pool_of(manifest) == pool_of(shuffled)
    assert draw_split(pool_of(manifest), K1, 0) == draw_split(pool_of(shuffled), K1, 0)


def test_runs_draw_different_references_and_share_the_test_set():
    pool = pool_of(make_manifest(), normal_pool=12)
    splits = [draw_split(pool, K1, run) for run in range(4)]
    assert len({tuple(s["normal_refs"]) for s in splits}) > 1
    assert all(s["test"] == pool["test"] for s in splits)


def test_anomalous_runs_each_get_a_different_anomalous_image():
    pool = pool_of(make_manifest())
    refs = [draw_split(pool, A1, run)["anomalous_refs"] for run in range(3)]
    assert len({r[0] for r in refs}) == 3
    split = draw_split(pool, A1, 0)
    assert len(split["validation"]) == 1 and not set(split["validation"]) & set(split["test"])


def test_a_pool_too_small_for_the_runs_names_the_config_key():
    pool = pool_of(make_manifest(), anomalous_pool=1)
    with pytest.raises(ValueError, match="reference_pool.anomalous"):
        draw_split(pool, A1, 1)


def test_adding_a_setting_does_not_change_the_images_to_encode():
    pool = pool_of(make_manifest())
    before = pool_image_ids(pool)
    for setting in (K1, A1):
        split = draw_split(pool, setting, 0)
        assert set(split["normal_refs"] + split["anomalous_refs"] + split["validation"] + split["test"]) <= set(before)
