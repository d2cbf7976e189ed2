# Evaluation and report stage: metrics per score file, one long metrics table, paper-style tables and plots.


# Tables, figures and galleries are seconds of work each: they run on the submitting host under SLURM.
localrules:
    collect_metrics,
    tables,
    summary_table,
    plots,
    gallery,


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
    benchmark:
        f"{R}/benchmarks/evaluate/{{scorer}}/{{dataset}}/{{category}}/{{setting}}/run{{run}}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule collect_metrics:
    input:
        parts=all_metric_parts,
    output:
        metrics=f"{R}/metrics/metrics.csv",
    log:
        f"{R}/logs/collect_metrics.log",
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/collect_metrics.py"


rule tables:
    input:
        metrics=rules.collect_metrics.output.metrics,
    output:
        md=report(f"{R}/tables/{{dataset}}.md", caption="../report/dataset_table.rst", category="Table files", labels={"table": "{dataset}", "format": "md"}),
        csv=report(f"{R}/tables/{{dataset}}.csv", caption="../report/dataset_table.rst", category="Table files", labels={"table": "{dataset}", "format": "csv"}),
        tex=f"{R}/tables/{{dataset}}.tex",
        html=report(f"{R}/tables/html/{{dataset}}.html", caption="../report/dataset_table.rst", category="Tables", labels={"table": "{dataset}"}),
    log:
        f"{R}/logs/tables/{{dataset}}.log",
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/tables.py"


rule summary_table:
    input:
        metrics=rules.collect_metrics.output.metrics,
    output:
        md=report(f"{R}/tables/summary.md", caption="../report/summary_table.rst", category="Table files", labels={"table": "summary", "format": "md"}),
        csv=report(f"{R}/tables/summary.csv", caption="../report/summary_table.rst", category="Table files", labels={"table": "summary", "format": "csv"}),
        tex=f"{R}/tables/summary.tex",
        html=report(f"{R}/tables/html/summary.html", caption="../report/summary_table.rst", category="Tables", labels={"table": "summary"}),
    log:
        f"{R}/logs/tables/summary.log",
    conda:
        "../envs/fsad.yaml"
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
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/plots.py"


# Confidence intervals, paired tests and per-defect-type AUROC of one dataset (config evaluation.statistics): from its
# score files and maps, with one set of seeded resamples per (category, setting, run) that every scorer shares.
if statistics_options().tables():

    rule statistics_tables:
        input:
            scores=dataset_score_files,
            maps=dataset_maps_files,
            manifest=rules.prepare_dataset.output.manifest,
        output:
            **{
                name: path if name.endswith("_tex") else report(
                    path, caption="../report/statistics.rst", category="Tables" if name.endswith("_html") else "Table files", labels={"table": f"statistics/{{dataset}}/{name}"}
                )
                for name, path in statistics_outputs().items()
            },
        params:
            options=canonical(config["evaluation"]["statistics"]),
            seed=config["seed"],
        log:
            f"{R}/logs/statistics/{{dataset}}.log",
        localrule: True
        conda:
            "../envs/fsad.yaml"
        script:
            "../workflow_scripts/statistics_tables.py"


# One report job per scorer instance whose method declares tables or figures of its own (for example the
# anomalous-samples paper's four tables): its outputs come from the declaration.
for _scorer in report_scorers():
    _tables, _figures = method_report_outputs(_scorer)

    rule:
        name:
            f"method_report_{_scorer}"
        input:
            metrics=rules.collect_metrics.output.metrics,
            scores=[score_path(*job) for job in score_jobs() if job[0] == _scorer],
            details=[score_path(*job, ".json") for job in score_jobs() if job[0] == _scorer],
            manifests=[f"{R}/data/{dataset}/manifest.csv" for dataset in scorer_datasets(_scorer)],
        output:
            **{
                name: path
                if name.endswith(".tex")
                else report(path, caption=str(METHODS[_scorer].report.caption), category="Tables", labels={"table": f"{_scorer}/{Path(name).stem}"})
                if name.endswith(".html")
                else report(path, caption=str(METHODS[_scorer].report.caption), category="Table files", labels={"table": f"{_scorer}/{name}"})
                for name, path in _tables.items()
            },
            **{
                name: report(path, caption=str(METHODS[_scorer].report.caption), category="Plots", subcategory=_scorer, labels={"figure": name})
                for name, path in _figures.items()
            },
        params:
            write=METHODS[_scorer].report.write,
            params=canonical(PARAMS[_scorer]),
            datasets=scorer_datasets(_scorer),
        log:
            f"{R}/logs/method_report/{_scorer}.log",
        localrule: True
        conda:
            "../envs/fsad.yaml"
        script:
            "../workflow_scripts/method_report.py"


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
    conda:
        "../envs/fsad.yaml"
    script:
        "../workflow_scripts/gallery.py"

