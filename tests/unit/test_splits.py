"""Few-shot splits: fixed test subsets, disjoint references within and across runs, determinism."""

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


def anomalous_manifest() -> pd.DataFrame:
    """Two anomalous images in each of the four (train/test, masked/unmasked) groups, plus normals."""
    rows = [(f"n-train-{i}", "cat", "train", 0, "good", f"/x/n{i}.png", "") for i in range(8)]
    rows += [(f"n-test-{i}", "cat", "test", 0, "good", f"/x/t{i}.png", "") for i in range(8)]
    for split in ("train", "test"):
        for masked in (True, False):
            kind = "masked" if masked else "unmasked"
            rows += [(f"a-{split}-{kind}-{i}", "cat", split, 1, "crack", f"/x/a{split}{kind}{i}.png", f"/x/m{i}.png" if masked else "")
                     for i in range(2)]
    return pd.DataFrame(rows, columns=["image_id", "category", "split", "label", "defect_type", "image_path", "mask_path"])


def test_anomalous_pool_takes_training_images_first_and_masked_ones_first_within_each_split():
    pool = pool_of(anomalous_manifest(), anomalous_pool=7)["anomalous_pool"]
    groups = [image_id.rsplit("-", 1)[0] for image_id in pool]
    assert groups == ["a-train-masked"] * 2 + ["a-train-unmasked"] * 2 + ["a-test-masked"] * 2 + ["a-test-unmasked"]


def test_an_anomalous_pool_smaller_than_the_training_anomalies_holds_only_masked_ones():
    pool = pool_of(anomalous_manifest(), anomalous_pool=2)["anomalous_pool"]
    assert sorted(pool) == ["a-train-masked-0", "a-train-masked-1"]


K2 = {"name": "k2", "normal_shots": 2, "anomalous_shots": 0, "validation_normals": 0}
K1V2 = {"name": "k1v2", "normal_shots": 1, "anomalous_shots": 0, "validation_normals": 2}
A2V1 = {"name": "a2v1", "normal_shots": 0, "anomalous_shots": 2, "validation_normals": 1}


def test_runs_of_a_setting_never_share_a_normal_reference():
    pool = pool_of(make_manifest(), normal_pool=8)
    refs = [image_id for run in range(4) for image_id in draw_split(pool, K2, run)["normal_refs"]]
    assert len(refs) == 8
    assert sorted(refs) == sorted(pool["normal_pool"])  # 4 runs x 2 shots use the whole pool once


def test_runs_with_several_anomalous_shots_never_share_an_anomalous_reference():
    pool = pool_of(make_manifest(), anomalous_pool=6)
    refs = [draw_split(pool, A2V1, run)["anomalous_refs"] for run in range(3)]
    assert all(len(r) == 2 for r in refs)
    assert sorted(sum(refs, [])) == sorted(pool["anomalous_pool"])


def test_validation_normals_never_overlap_the_runs_own_references():
    pool = pool_of(make_manifest(), normal_pool=6)
    for run in range(6):
        split = draw_split(pool, K1V2, run)
        assert len(split["validation"]) == 2 and len(split["normal_refs"]) == 1
        assert not set(split["validation"]) & set(split["normal_refs"])
        assert set(split["validation"]) <= set(pool["normal_pool"])


def test_too_few_normals_for_disjoint_references_across_runs_names_the_config_key_and_the_numbers():
    pool = pool_of(make_manifest(), normal_pool=5)
    draw_split(pool, K2, 1)  # runs 0 and 1 need 4 of 5
    with pytest.raises(ValueError, match=r"needs 6 distinct normal references.*holds 5.*reference_pool\.normal"):
        draw_split(pool, K2, 2)


def test_too_few_normals_for_references_and_validation_names_the_config_key_and_the_numbers():
    pool = pool_of(make_manifest(), normal_pool=2)
    with pytest.raises(ValueError, match=r"= 3 normal training images.*holds 2.*reference_pool\.normal"):
        draw_split(pool, K1V2, 0)


def test_no_test_image_left_after_the_pools_is_an_error():
    manifest = make_manifest(n_test_normal=0, n_test_anomalous=3)
    with pytest.raises(ValueError, match="no test images left"):
        pool_of(manifest, anomalous_pool=3)


def test_max_test_none_keeps_every_test_image_outside_the_anomalous_pool():
    manifest = make_manifest(n_test_normal=150, n_test_anomalous=60)
    pool = pool_of(manifest, max_test=None, anomalous_pool=3)
    expected = set(manifest.loc[manifest["split"] == "test", "image_id"]) - set(pool["anomalous_pool"])
    assert len(pool["test"]) == 207 and set(pool["test"]) == expected


ZS = {"name": "zs", "normal_shots": 0, "anomalous_shots": 0, "validation_normals": 0}


def test_a_test_only_dataset_runs_zero_shot_and_names_the_problem_for_few_shot_settings():
    manifest = make_manifest(n_train=0, n_test_normal=6, n_test_anomalous=4)
    pool = pool_of(manifest, anomalous_pool=0)
    assert pool["normal_pool"] == [] and len(pool["test"]) == 10
    split = draw_split(pool, ZS, 0)
    assert split["normal_refs"] == [] and split["validation"] == [] and len(split["test"]) == 10
    for setting in (K1, ZS | {"name": "v2", "validation_normals": 2}):
        with pytest.raises(ValueError, match="no normal training images.*zero-shot settings"):
            draw_split(pool, setting, 0)
