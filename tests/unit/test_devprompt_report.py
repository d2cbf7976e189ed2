"""The devprompt report: per-category AUROC beside other instances and sensitivity tables from sweep instances,
and the config checks of the instances the report names."""

import pandas as pd
import pytest

from fsad.evaluation.tables import NA_MISSING
from fsad.score_files import write_score_table
from fsad.scorers.devprompt.method import METHOD
from fsad.scorers.devprompt.report import write_report
from fsad.scorers.method import ReportContext
from fsad.scorers.registry import method_params

RUNS = {  # scorer -> category -> pixel AUROC per run (image AUROC is 0.05 lower)
    "devprompt": {"bottle": [0.90, 0.80], "cable": [0.70, 0.70]},
    "promptad": {"bottle": [0.85, 0.85], "cable": [0.60, 0.80]},
    "winclip": {"bottle": [0.50]},  # one run: no std
    "devprompt_lam01": {"bottle": [0.95, 0.95], "cable": [0.65, 0.75]},
}


@pytest.fixture
def report(tmp_path):
    rows = [
        {"dataset": "mvtec_ad", "category": category, "setting": "k1", "run": run, "scorer": scorer, "metric": metric,
         "value": value - (0.05 if metric == "image_auroc" else 0), "weights": "laion400m_e31", "environment": "torch 2.14.1"}
        for scorer, categories in RUNS.items() for category, values in categories.items() for run, value in enumerate(values)
        for metric in ("pixel_auroc", "image_auroc")
    ]
    rows.append({"dataset": "mvtec_ad", "category": "bottle", "setting": "k1", "run": 0, "scorer": "devprompt", "metric": "pixel_pro", "value": 0.5, "weights": "laion400m_e31", "environment": "torch 2.14.1"})
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    scores = tmp_path / "run0.parquet"
    keys = {"scorer": "devprompt", "method": "devprompt", "dataset": "mvtec_ad", "category": "bottle", "setting": "k1", "run": 0, "weights": "laion400m_e31"}
    write_score_table(pd.DataFrame({"image_id": ["a"], "score": [1.0]}), keys, scores)
    params = method_params(METHOD, {"compare_with": ["winclip", "promptad"], "sensitivity": {"lambda_dev": {"devprompt_lam01": 0.1}}})
    written = write_report(ReportContext(metrics_csv=tmp_path / "metrics.csv", score_files=[scores], detail_files=[], manifests={},
                                                   params=params, tables_dir=tmp_path / "tables", figures_dir=tmp_path / "plots"))
    return tmp_path / "tables", written


def read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_the_report_writes_every_declared_table_in_three_formats(report):
    tables, written = report
    assert sorted(p.name for p in written) == sorted(f"{name}.{ext}" for name in METHOD.report.tables for ext in ("md", "csv", "tex"))


def test_per_category_tables_put_the_instance_beside_the_compared_ones_with_run_statistics(report):
    tables, _ = report
    pixel = read(tables / "pixel_auroc.csv")
    assert list(pixel.columns) == ["dataset", "setting", "category", "winclip", "promptad", "devprompt", "weights"]
    assert pixel[["category", "winclip", "promptad", "devprompt"]].values.tolist() == [
        ["bottle", "50.00", "85.00 ± 0.00", "85.00 ± 5.00"],
        ["cable", "–", "70.00 ± 10.00", "70.00 ± 0.00"],
        # per run the mean over categories: devprompt (90 + 70) / 2 = 80 and (80 + 70) / 2 = 75, promptad 72.5 and 82.5;
        # winclip has no cable: no mean over the two categories (bottle's 50.00 alone would pass for one)
        ["mean", NA_MISSING, "77.50 ± 5.00", "77.50 ± 2.50"],
    ]
    image = read(tables / "image_auroc.csv")
    assert image.loc[0, "devprompt"] == "80.00 ± 5.00"
    assert "Weights provenance: laion400m_e31" in (tables / "pixel_auroc.md").read_text()
    assert "has no result" in (tables / "pixel_auroc.md").read_text()  # the footnote of that n/a


def test_sensitivity_tables_have_one_column_per_swept_value_in_increasing_order(report):
    tables, _ = report
    lam = read(tables / "sensitivity_lambda.csv")
    assert list(lam.columns) == ["dataset", "setting", "category", "λ = 0.1", "λ = 1", "weights"]
    assert lam[["λ = 0.1", "λ = 1"]].values.tolist() == [["95.00 ± 0.00", "85.00 ± 5.00"], ["70.00 ± 5.00", "70.00 ± 0.00"], ["82.50 ± 2.50", "77.50 ± 2.50"]]
    assert "λ = 0.1: devprompt_lam01; λ = 1: devprompt" in (tables / "sensitivity_lambda.md").read_text()
    assert list(read(tables / "sensitivity_topk.csv").columns)[3:] == ["K = 10 %", "weights"]
    assert list(read(tables / "sensitivity_margin.csv").columns)[3:] == ["a = 5", "weights"]


def _config(**devprompt):
    scorers = {
        "winclip": {"method": "winclip"},
        "devprompt": {"method": "devprompt", **devprompt},
        "devprompt_a3": {"method": "devprompt", "margin": 3},
    }
    return {"scorers": scorers}


@pytest.mark.parametrize(
    ("devprompt", "error"),
    [
        ({"compare_with": ["winclip"], "sensitivity": {"margin": {"devprompt_a3": 3}}}, None),
        ({"compare_with": ["absent"]}, "compare_with names 'absent'"),
        ({"sensitivity": {"margin": {"winclip": 3}}}, "not a devprompt instance of this config"),
        ({"sensitivity": {"margin": {"devprompt_a3": 7}}}, "has margin: 3"),
        ({"deviation_loss": False, "promptad_weight": 0}, "nothing would be trained"),
    ],
)
def test_config_checks_name_the_wrong_reference(devprompt, error):
    config = _config(**devprompt)
    message = METHOD.check(method_params(METHOD, config["scorers"]["devprompt"]), config)
    assert message is None if error is None else error in message


def test_every_parameter_but_smoothing_and_the_reports_changes_the_fit():
    from fsad.schemas import load_schema

    properties = set(load_schema(METHOD.schema)["properties"])
    # the generated pool joins PromptAD's visual memory when scoring: it never reruns the fit
    score_or_report_only = {"smoothing_sigma", "compare_with", "sensitivity", "sensitivity_metric", "sub_scores", "generator", "generated_references"}
    assert set(METHOD.stage_names("fit")) == properties - score_or_report_only
    assert set(METHOD.stage_names("report")) == {"compare_with", "sensitivity", "sensitivity_metric", "sub_scores"}
    assert "smoothing_sigma" in METHOD.score_params(method_params(METHOD, {})) and "compare_with" not in METHOD.score_params(method_params(METHOD, {}))

