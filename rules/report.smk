# Evaluation and report stage: metrics per score file, one long metrics table, paper-style tables and plots.


# Tables, figures and galleries are seconds of work each: they run on the submitting host under SLURM.
localrules:
    collect_metrics,
    tables,
    summary_table,
    html_table,
    plots,
    anomalous_tables,
    gallery,


ANOMALOUS_TABLES = ["table1_one_sample", "table2_sub_scores_test", "table3_sub_scores_validation", "table4_weight_validation"]


def html_tables():
    """Every table of the run as an HTML page: the report shows those inline, CSV and Markdown only as downloads."""
    names = [*datasets_scored(), "summary"]
    if anomalous_jobs():
        names += [f"anomalous_samples/{table}" for table in ANOMALOUS_TABLES]
    return [f"{R}/tables/html/{name}.html" for name in names]


rule evaluate:
    input:
        scores=score_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}"),
        maps=score_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}", ".maps.h5"),
        manifest=rules.prepare_dataset.output.manifest,
    output:
        metrics=metrics_part_path("{scorer}", "{dataset}", "{category}", "{setting}", "{run}"),
    params:
        map_size=config["evaluation"]["map_size"],
        fpr_limit=config["evaluation"]["pro_fpr_limit"],
    log:
        f"{R}/logs/evaluate/{{scorer}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.log",
    script:
        "../workflow_scripts/evaluate.py"


rule collect_metrics:
    input:
        parts=all_metric_parts,
    output:
        metrics=f"{R}/metrics/metrics.csv",
    log:
        f"{R}/logs/collect_metrics.log",
    script:
        "../workflow_scripts/collect_metrics.py"


rule tables:
    input:
        metrics=rules.collect_metrics.output.metrics,
    output:
        md=report(f"{R}/tables/{{dataset}}.md", caption="../report/dataset_table.rst", category="Table files", labels={"table": "{dataset}", "format": "md"}),
        csv=report(f"{R}/tables/{{dataset}}.csv", caption="../report/dataset_table.rst", category="Table files", labels={"table": "{dataset}", "format": "csv"}),
        tex=f"{R}/tables/{{dataset}}.tex",
    log:
        f"{R}/logs/tables/{{dataset}}.log",
    script:
        "../workflow_scripts/tables.py"


rule summary_table:
    input:
        metrics=rules.collect_metrics.output.metrics,
    output:
        md=report(f"{R}/tables/summary.md", caption="../report/summary_table.rst", category="Table files", labels={"table": "summary", "format": "md"}),
        csv=report(f"{R}/tables/summary.csv", caption="../report/summary_table.rst", category="Table files", labels={"table": "summary", "format": "csv"}),
        tex=f"{R}/tables/summary.tex",
    log:
        f"{R}/logs/tables/summary.log",
    script:
        "../workflow_scripts/summary_table.py"


rule plots:
    input:
        metrics=rules.collect_metrics.output.metrics,
        scores=dataset_score_files,
    output:
        roc=report(f"{R}/plots/roc_{{dataset}}.png", caption="../report/roc.rst", category="Plots", subcategory="{dataset}", labels={"figure": "ROC curves"}),
        auroc=report(f"{R}/plots/auroc_{{dataset}}.png", caption="../report/auroc_bars.rst", category="Plots", subcategory="{dataset}", labels={"figure": "AUROC per category"}),
    log:
        f"{R}/logs/plots/{{dataset}}.log",
    script:
        "../workflow_scripts/plots.py"


rule anomalous_tables:
    input:
        metrics=rules.collect_metrics.output.metrics,
        scores=anomalous_score_files,
        details=anomalous_detail_files,
        manifests=anomalous_manifests,
    output:
        tables=[
            report(path, caption="../report/anomalous_tables.rst", category="Table files", labels={"table": f"anomalous_samples/{table}", "format": ext})
            if ext != "tex"
            else path
            for table in ANOMALOUS_TABLES
            for ext, path in [(ext, f"{R}/tables/anomalous_samples/{table}.{ext}") for ext in ("md", "csv", "tex")]
        ],
        figure=report(f"{R}/plots/defect_size.png", caption="../report/defect_size.rst", category="Plots", subcategory="anomalous samples", labels={"figure": "defect size"}),
    params:
        sub_scores=anomalous_sub_scores,
        datasets=anomalous_datasets,
    log:
        f"{R}/logs/anomalous_tables.log",
    script:
        "../workflow_scripts/anomalous_tables.py"


rule gallery:
    input:
        scores=score_path("{scorer}", "{dataset}", "{category}", "{setting}", 0),
        maps=score_path("{scorer}", "{dataset}", "{category}", "{setting}", 0, ".maps.h5"),
        manifest=rules.prepare_dataset.output.manifest,
    output:
        gallery=report(
            f"{R}/plots/gallery/{{scorer}}/{{dataset}}/{{category}}/{{setting}}.png",
            caption="../report/gallery.rst",
            category="Anomaly maps",
            subcategory="{scorer} / {dataset}",
            labels={"category": "{category}", "setting": "{setting}"},
        ),
    params:
        per_group=2,
    log:
        f"{R}/logs/gallery/{{scorer}}/{{dataset}}/{{category}}/{{setting}}.log",
    script:
        "../workflow_scripts/gallery.py"


rule html_table:
    input:
        csv=f"{R}/tables/{{table}}.csv",
    output:
        html=report(f"{R}/tables/html/{{table}}.html", caption="../report/html_table.rst", category="Tables", labels={"table": "{table}"}),
    wildcard_constraints:
        table=r"[\w/]+",
    log:
        f"{R}/logs/html_table/{{table}}.log",
    script:
        "../workflow_scripts/html_table.py"
