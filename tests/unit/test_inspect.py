"""Inspect: thresholds from the setup's own scores (worked by hand), normal percentiles, unreadable files listed but not
fatal, features of new images joined with the run's, and the checks of the config's inspect entries."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fsad.config import ConfigError
from fsad.data.splits import Split
from fsad.inspect.config import check_inspections
from fsad.inspect.demo import demo_images
from fsad.inspect.folder import folder_files, inspect_image_id, readable_images
from fsad.inspect.run import check_rescored, joined_features, percentile_population, seen_ids
from fsad.inspect.thresholds import f1_max_threshold, fpr_threshold, is_anomalous, normal_percentile, thresholds
from fsad.scorers.method import Generated, Members

from tests.unit.feature_fixtures import random_features


def test_fpr_threshold_of_ten_references_worked_by_hand():
    # sorted normals 1..10: at FPR 0.1, j = ceil(10 * 0.9) = 9 -> t = 9, and only the normal scoring 10 lies above it
    references = np.array([7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0])
    assert fpr_threshold(references, 0.1) == 9.0
    # FPR 0.25: j = ceil(7.5) = 8 -> t = 8 (2 of 10 above: 0.2 <= 0.25); FPR 0.05: j = ceil(9.5) = 10 -> the maximum
    assert fpr_threshold(references, 0.25) == 8.0
    assert fpr_threshold(references, 0.05) == 10.0
    threshold = thresholds({"validation_normals": np.array([]), "reference_normals": references, "test_normals": np.array([0.5])},
                           np.array([0.5]), np.array([0]), 0.1)
    by_option = {t.option: t for t in threshold}
    assert by_option["reference_normals"].value == 9.0 and by_option["reference_normals"].n_scores == 10
    assert by_option["validation_normals"].value is None and "no validation normals" in by_option["validation_normals"].unavailable
    assert by_option["test_f1_max"].value is None and "one class" in by_option["test_f1_max"].unavailable
    # the stated rate holds on the references themselves: exactly one of ten is flagged
    assert is_anomalous(references, by_option["reference_normals"]).sum() == 1
    assert list(is_anomalous(np.array([8.9, 9.0, 9.01]), by_option["reference_normals"])) == [False, False, True]


def test_f1_max_threshold_worked_by_hand():
    # thresholds 0.8: P 1, R 0.5, F1 0.667; 0.4: P 0.5, R 0.5, F1 0.5; 0.35: P 2/3, R 1, F1 0.8; 0.1: P 0.5, R 1, F1 0.667
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert f1_max_threshold(scores, labels) == pytest.approx(0.35)
    option = next(t for t in thresholds({k: np.array([0.1, 0.4]) for k in ("validation_normals", "reference_normals", "test_normals")},
                                        scores, labels, 0.05) if t.option == "test_f1_max")
    assert option.value == pytest.approx(0.35)
    assert list(is_anomalous(np.array([0.34, 0.35, 0.9]), option)) == [False, True, True]


def test_normal_percentile_is_the_fraction_of_normal_scores_strictly_below():
    normals = np.array([4.0, 1.0, 3.0, 2.0])
    assert list(normal_percentile(np.array([0.5, 2.0, 2.5, 5.0]), normals)) == [0.0, 0.25, 0.5, 1.0]
    assert percentile_population("test_f1_max") == "test_normals"
    assert percentile_population("validation_normals") == "validation_normals"


def _png(path, colour):
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def test_unreadable_file_is_listed_with_its_reason_and_the_others_are_kept(tmp_path):
    good = _png(tmp_path / "b_good.png", (10, 20, 30))
    other = _png(tmp_path / "a_other.png", (200, 20, 30))
    (tmp_path / "c_broken.png").write_text("not a png")
    truncated = tmp_path / "d_truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    (tmp_path / ".hidden.png").write_text("skipped")
    (tmp_path / "subfolder").mkdir()
    files = folder_files(tmp_path)
    assert [f.name for f in files] == ["a_other.png", "b_good.png", "c_broken.png", "d_truncated.png"]
    images, unreadable = readable_images(files)
    assert list(images) == [inspect_image_id(other), inspect_image_id(good)]
    assert [row["file"] for row in unreadable] == [str((tmp_path / "c_broken.png").resolve()), str(truncated.resolve())]
    assert all("corrupt or unreadable image" in row["reason"] for row in unreadable)


def test_an_edited_file_gets_a_new_id_so_that_it_is_encoded_again(tmp_path):
    path = _png(tmp_path / "part.png", (1, 2, 3))
    before = inspect_image_id(path)
    _png(path, (4, 5, 6))
    assert inspect_image_id(path) != before and before.startswith("part.png-")


def test_joined_features_read_new_images_from_their_store_and_keep_the_order():
    seen, new = random_features(3, seed=0), random_features(2, seed=1)
    new.image_ids = ["new0", "new1"]
    load = joined_features(seen.select, new.select, {"new0", "new1"})
    batch = load(["new1", "img2", "new0", "img0"])
    assert batch.image_ids == ["new1", "img2", "new0", "img0"]
    assert np.array_equal(batch.image_embeddings[0], new.image_embeddings[1])
    assert np.array_equal(batch.image_embeddings[1], seen.image_embeddings[2])
    assert np.array_equal(batch.windows[3][3], seen.windows[3][0])


def test_seen_images_are_validation_normals_references_and_the_first_saved_test_images():
    split = Split("d", "c", "a1", 0, 1, ["r0"], ["x0"], ["v0", "v1"], ["t0", "t1", "t2"])
    manifest = pd.DataFrame({"label": [0, 1, 0]}, index=["v0", "v1", "r0"])
    groups = seen_ids(SimpleNamespace(split=split, manifest=manifest), ["t0", "t1", "t2"], 2)
    assert groups == {"validation_normals": ["v0"], "reference_normals": ["r0"], "check": ["t0", "t1"]}


def test_rescored_test_images_that_differ_from_the_saved_scores_stop_the_inspection():
    assert check_rescored(np.array([0.5, 2.0]), np.array([0.5, 2.0005]), ["a", "b"], "s") == pytest.approx(0.0005)
    with pytest.raises(RuntimeError, match="'b' scores 2.1 when scored again, 2 in the run's score file"):
        check_rescored(np.array([0.5, 2.1]), np.array([0.5, 2.0]), ["a", "b"], "s")


def test_demo_folder_takes_normal_and_anomalous_images_in_turn():
    scores = pd.DataFrame({"image_path": ["a1", "a2", "a3", "n1", "n2"], "label": [1, 1, 1, 0, 0]})
    assert demo_images(scores, 4) == ["n1", "a1", "n2", "a2"]


def _method(personalized=False, members=()):
    return SimpleNamespace(
        generated=lambda params: Generated("g", personalized=True) if personalized else Generated(),
        members=lambda params: Members(tuple(members)),
    )


CONFIG = {"settings": [{"name": "k1", "normal_shots": 1, "validation_normals": 0}, {"name": "a1", "normal_shots": 0, "validation_normals": 1}]}
JOBS = (("s", "d", "c", "k1", 0), ("s", "d", "c", "a1", 0))


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"setting": "k1", "run": 1}, "s/d/c/k1/1 is no score job of this config"),
        ({"setting": "k1", "decision": "validation_normals"}, "setting 'k1' has validation_normals 0"),
        ({"setting": "a1", "decision": "reference_normals"}, "setting 'a1' has normal_shots 0"),
    ],
)
def test_inspect_entries_that_name_no_usable_setup_are_refused(entry, message):
    defaults = {"run": 0, "decision": "test_normals"}
    config = {**CONFIG, "inspect": {"mine": {"scorer": "s", "dataset": "d", "category": "c", "images": "x", **defaults, **entry}}}
    with pytest.raises(ConfigError, match=message):
        check_inspections(config, {"s": _method()}, {"s": {}}, JOBS)


def test_inspect_refuses_a_fusion_whose_members_have_no_scores_of_new_images():
    config = {**CONFIG, "inspect": {"mine": {"scorer": "s", "dataset": "d", "category": "c", "setting": "a1", "images": "x", "run": 0,
                                     "decision": "validation_normals"}}}
    with pytest.raises(ConfigError, match=r"fuses the score files of other instances.*inspect one of its members \(a, b\)"):
        check_inspections(config, {"s": _method(members=["a", "b"])}, {"s": {}}, JOBS)


def test_inspect_refuses_a_method_that_reads_personalized_test_images():
    config = {**CONFIG, "inspect": {"mine": {"scorer": "s", "dataset": "d", "category": "c", "setting": "a1", "images": "x", "run": 0,
                                     "decision": "validation_normals"}}}
    with pytest.raises(ConfigError, match="personalized image made for each test image"):
        check_inspections(config, {"s": _method(personalized=True)}, {"s": {}}, JOBS)
    check_inspections(config, {"s": _method()}, {"s": {}}, JOBS)
