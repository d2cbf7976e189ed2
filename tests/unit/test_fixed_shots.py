"""The papers' shots: a hand-made shots file gives splits holding exactly its images per run, PromptAD's seed files
convert to the expected shots file, and what a file lacks stops with its name and the fix."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from fsad.data.fixed_shots import (
    FORMAT,
    ShotsFileError,
    convert_promptad,
    main,
    parse_shots,
    read_shots,
    write_shots,
)
from fsad.data.manifest import (
    manifest_row,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from fsad.data.splits import draw_pool, draw_split

# Training normals in an order that is not their names' (as an unsorted glob would list them).
TRAIN_STEMS = ["004", "000", "005", "002", "001", "003"]


def toy_manifest(tmp_path) -> pd.DataFrame:
    rows = []
    for category in ("bottle", "screw"):
        rows += [manifest_row(category, "train", "good", stem, tmp_path / category / "train" / "good" / f"{stem}.png") for stem in TRAIN_STEMS]
        rows += [manifest_row(category, "test", "good", f"{n:03d}", tmp_path / category / "test" / "good" / f"{n:03d}.png") for n in range(4)]
        rows += [manifest_row(category, "test", "crack", f"{n:03d}", tmp_path / category / "test" / "crack" / f"{n:03d}.png") for n in range(3)]
    return validate_manifest(pd.DataFrame(rows))


def ids(category: str, *stems: str) -> list[str]:
    return [f"{category}-train-good-{stem}" for stem in stems]


SHOTS = {
    "format": FORMAT,
    "source": "hand-made",
    "shots": {
        "bottle": {1: [ids("bottle", "003"), ids("bottle", "000")], 2: [ids("bottle", "005", "001")]},
        "screw": {1: [ids("screw", "002")]},
    },
}
K1 = {"name": "k1", "normal_shots": 1, "anomalous_shots": 0, "validation_normals": 2}
K2 = {"name": "k2", "normal_shots": 2, "anomalous_shots": 0, "validation_normals": 0}


@pytest.fixture
def shots_file(tmp_path):
    path = tmp_path / "shots.yaml"
    path.write_text(yaml.safe_dump(SHOTS))
    return path


def pool_of(manifest, shots=None, normal_pool=2):
    fixed = shots.images("bottle") if shots else ()
    return draw_pool(manifest, dataset="toy", category="bottle", seed=0, max_test=None, normal_pool=normal_pool, anomalous_pool=0, fixed_normals=fixed)


def test_each_run_holds_exactly_the_files_images_and_the_rest_is_drawn_as_without_it(tmp_path, shots_file):
    manifest, shots = toy_manifest(tmp_path), read_shots(shots_file)
    shots.check_images(manifest, "bottle")
    drawn, fixed = pool_of(manifest), pool_of(manifest, shots)
    assert fixed["test"] == drawn["test"]
    assert fixed["normal_pool"][:2] == drawn["normal_pool"]  # the drawn part of the pool is unchanged
    assert set(fixed["normal_pool"]) == set(drawn["normal_pool"]) | set(ids("bottle", "000", "001", "003", "005"))
    expected = {("k1", 0): ids("bottle", "003"), ("k1", 1): ids("bottle", "000"), ("k2", 0): ids("bottle", "005", "001")}
    for (name, run), refs in expected.items():
        setting = K1 if name == "k1" else K2
        split = draw_split(fixed, setting, run, fixed_refs=shots.normal_refs("bottle", setting["normal_shots"], run))
        assert split["normal_refs"] == refs
        assert split["test"] == drawn["test"]
        assert len(split["validation"]) == setting["validation_normals"] and not set(split["validation"]) & set(refs)
        assert set(split["validation"]) <= set(fixed["normal_pool"])


def test_promptad_seed_files_convert_to_the_expected_shots_file(tmp_path):
    seeds = tmp_path / "seeds_mvtec"
    (seeds / "bottle").mkdir(parents=True)
    (seeds / "screw").mkdir()
    (seeds / "bottle" / "selected_samples_per_run.txt").write_text("#1: 3\n#2: 001 004\n#4: 005 000 002 003\n")
    (seeds / "screw" / "selected_samples_per_run.txt").write_text("#1: 0\n")
    content = convert_promptad(seeds, toy_manifest(tmp_path))
    assert content == {
        "format": FORMAT,
        "source": "PromptAD seeds_mvtec (converted)",
        "shots": {
            "bottle": {1: [ids("bottle", "003")], 2: [ids("bottle", "001", "004")], 4: [ids("bottle", "005", "000", "002", "003")]},
            "screw": {1: [ids("screw", "000")]},
        },
    }
    # the command line writes the same, and the workflow reads it back
    manifest_path = tmp_path / "manifest.csv"
    write_manifest(toy_manifest(tmp_path), manifest_path)
    main(["promptad", str(seeds), str(manifest_path), str(tmp_path / "out" / "shots.yaml")])
    written = read_shots(tmp_path / "out" / "shots.yaml")
    assert written.normal_refs("bottle", 2, 0) == ids("bottle", "001", "004")
    assert written.images("screw") == ids("screw", "000")
    written.check_images(read_manifest(manifest_path), "bottle")


def test_what_the_file_lacks_stops_with_the_file_and_the_fix(tmp_path, shots_file):
    shots = read_shots(shots_file)
    with pytest.raises(ShotsFileError, match=r"shots.yaml: no shots for category 'cable' \(it has \['bottle', 'screw'\]\).*shots_file"):
        shots.normal_refs("cable", 1, 0)
    with pytest.raises(ShotsFileError, match=r"shots.yaml: category 'screw' has no runs of 2 normal shots \(it has \[1\]\)"):
        shots.normal_refs("screw", 2, 0)
    with pytest.raises(ShotsFileError, match=r"shots.yaml: category 'bottle' lists 1 run\(s\) of 2 shots, run 1 is asked; lower `runs:`"):
        shots.normal_refs("bottle", 2, 1)
    other = toy_manifest(tmp_path)
    other = other[other["image_id"] != "bottle-train-good-005"]
    with pytest.raises(ShotsFileError, match=r"shots.yaml: images \['bottle-train-good-005'\] \(1 of category 'bottle'\) are not training normals.*convert"):
        shots.check_images(other, "bottle")
    with pytest.raises(ShotsFileError, match=r"missing.yaml: shots file not found"):
        read_shots(tmp_path / "missing.yaml")
    with pytest.raises(ShotsFileError, match=r"bad.yaml: category 'bottle', 2 shots, run 0: 1 images"):
        parse_shots({"format": FORMAT, "shots": {"bottle": {2: [ids("bottle", "001")]}}}, "bad.yaml")
    with pytest.raises(ShotsFileError, match=r"bad.yaml: not a shots file of format"):
        parse_shots({"shots": {}}, "bad.yaml")


def test_the_converter_refuses_indices_past_the_training_normals_and_unknown_categories(tmp_path):
    seeds = tmp_path / "seeds_visa"
    (seeds / "pcb1").mkdir(parents=True)
    (seeds / "pcb1" / "selected_samples_per_run.txt").write_text("#1: 0\n")
    with pytest.raises(ShotsFileError, match=r"pcb1.*no training normals in the manifest"):
        convert_promptad(seeds, toy_manifest(tmp_path))
    (seeds / "pcb1").rename(seeds / "bottle")
    (seeds / "bottle" / "selected_samples_per_run.txt").write_text("#1: 0006\n")
    with pytest.raises(ShotsFileError, match=r"indices \[6\] are past the 6 training normals of 'bottle'"):
        convert_promptad(seeds, toy_manifest(tmp_path))
    (seeds / "bottle" / "selected_samples_per_run.txt").write_text("#2: 1\n")
    with pytest.raises(ShotsFileError, match=r"line 1: 1 indices for 2 shots"):
        convert_promptad(seeds, toy_manifest(tmp_path))


def test_a_split_refuses_fixed_shots_outside_its_pool(tmp_path, shots_file):
    drawn = pool_of(toy_manifest(tmp_path))  # a pool drawn before the shots file was given
    outside = [i for i in ids("bottle", *TRAIN_STEMS) if i not in drawn["normal_pool"]][:1]
    with pytest.raises(ValueError, match=r"toy/bottle/k1/run0: the fixed shots .* are not 1 images of the normal pool.*delete splits/toy/bottle/pool.json"):
        draw_split(drawn, K2 | {"name": "k1", "normal_shots": 1}, 0, fixed_refs=outside)


def test_write_shots_refuses_a_malformed_file(tmp_path):
    with pytest.raises(ShotsFileError):
        write_shots(tmp_path / "x.yaml", {"format": FORMAT, "shots": {"bottle": {1: [["a", "b"]]}}})
    assert not (tmp_path / "x.yaml").exists()


def test_a_missing_shots_file_stops_the_config_with_the_conversion_command(tmp_path):
    from fsad.config import ConfigError, _check_shots_file

    with pytest.raises(ConfigError, match=r"datasets.mvtec_ad.shots_file: .*x.yaml does not exist.*python -m fsad.data.fixed_shots promptad"):
        _check_shots_file({"name": "mvtec_ad", "kind": "mvtec_ad", "shots_file": str(tmp_path / "x.yaml")})
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(SHOTS))
    _check_shots_file({"name": "mvtec_ad", "kind": "mvtec_ad", "shots_file": str(tmp_path / "x.yaml")})


def test_the_papers_shots_overlay_gives_each_devprompt_dataset_a_shots_file_and_one_run():
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parents[2] / "config" / "benchmarks"
    drawn = yaml.safe_load((benchmarks / "devprompt.yaml").read_text())
    papers = yaml.safe_load((benchmarks / "papers_shots" / "devprompt.yaml").read_text())
    assert papers["runs"] == 1
    assert [{k: v for k, v in d.items() if k != "shots_file"} for d in papers["datasets"]] == drawn["datasets"]
    assert [d["shots_file"] for d in papers["datasets"]] == ["shots/promptad_mvtec_ad.yaml", "shots/promptad_visa.yaml"]
