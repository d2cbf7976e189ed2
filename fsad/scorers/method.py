"""What a method declares about itself, in one place inside its own package.

Each method package holds a ``method.py`` with ``METHOD = Method(...)`` and a ``schema.yaml`` that
validates its parameters and gives each its default. The workflow reads the declarations to build every
job's inputs (masks, features, a fitted artifact, report tables) and never names a method itself.

Declarations import nothing heavy: the score and fit steps are named as ``"module:function"`` and
imported only by the job that runs them, so parsing the workflow stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fsad.config import Params
from fsad.scorers.method_schema import schema_stages


# Instance keys that choose jobs rather than change results: the workflow reads them, methods never see them.
SELECTION_KEYS = ("method", "backbone", "settings", "datasets")

FIT_SCOPES = ("run", "dataset")


def _readable(category: str) -> str:
    from fsad.text.class_names import class_name

    return class_name(category)


def resolve(target: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function."""
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"{target!r} is not of the form 'package.module:function'")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Needs:
    """What a method's score jobs need from the data and the split.

    Attributes:
        masks: pixel masks of anomalous reference images (datasets without masks are refused).
        anomalous_shots: exact number of anomalous references a split must hold, or None for any.
        min_normal_shots: least number of normal references.
        min_validation_normals: least number of validation normals (``validation_normals`` of the setting),
            as a function of the instance's parameters (e.g. only when a weight search is on).
    """

    masks: bool = False
    anomalous_shots: int | None = None
    min_normal_shots: int = 0
    min_validation_normals: Callable[[Params], int] = lambda params: 0


@dataclass(frozen=True)
class FeatureNeeds:
    """Cached features a method reads: window sizes, patch tokens of chosen blocks, V-V attention tokens."""

    window_sizes: tuple[int, ...] = ()
    layers: tuple[int, ...] = ()
    vv_layers: tuple[int, ...] = ()
    mid_layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Generated:
    """Images of a generator (the config's ``generators:``, :mod:`fsad.diffusion`) that a method's score jobs read.

    Attributes:
        generator: the generator's name, or None when the instance reads none.
        pool: the run's anomaly-free pool (``pools/{generator}/...``) and its features on the instance's backbone.
        personalized: the run's personalized test images (``personalized/{generator}/...``) and their features.
    """

    generator: str | None = None
    pool: bool = False
    personalized: bool = False


def generator_pool(params: Params) -> Generated:
    """What a memory-bank method reads through its ``generator`` parameter: that generator's anomaly-free pool, whose
    generated images join the references (One-to-Normal's transfer experiment); nothing when it is null."""
    return Generated(params["generator"], pool=True) if params["generator"] else Generated()


@dataclass(frozen=True)
class Members:
    """Other scorer instances whose outputs a method's score jobs read (a fusion of scorers).

    Attributes:
        scorers: the instances, in order; each must run the reader's datasets and settings. Their score jobs also score
            a labelled validation set (:mod:`fsad.fusion.validation_set`) and the reader's score job reads their scores,
            maps and details files of the same (dataset, category, setting, run).
        validation: what that validation set holds (``normal_augmentations``, ``anomalies``, ``defect_types``), or None
            with no members.
    """

    scorers: tuple[str, ...] = ()
    validation: dict[str, Any] | None = None


@dataclass(frozen=True)
class Fit:
    """A learned artifact: one fit job per scope, written to ``models/{scorer}/{fit_key}/``.

    Attributes:
        run: ``"module:function"`` taking a :class:`~fsad.scorers.base.FitContext`, returning a
            :class:`~fsad.scorers.base.FitResult`.
        scope: ``"run"``: one fit per (dataset, category, setting, run) on that run's references;
            ``"dataset"``: one fit per training dataset (the ``train_dataset`` parameter), shared by every
            target dataset's jobs (cross-dataset methods).
    The parameters that change the fit are the schema's properties whose ``x-stages`` include ``fit``
    (:func:`schema_stages`); a change of any other parameter never reruns it.
    """

    run: str
    scope: str = "run"

    def __post_init__(self) -> None:
        if self.scope not in FIT_SCOPES:
            raise ValueError(f"fit scope {self.scope!r} is not one of {FIT_SCOPES}")


@dataclass(frozen=True)
class Report:
    """Method-specific tables and figures, written by one job per scorer instance.

    Attributes:
        write: ``"module:function"`` taking a :class:`ReportContext`, returning the paths written.
        tables: base names written as ``tables/{scorer}/{name}.{md,csv,tex}`` and ``tables/html/{scorer}/{name}.html``.
        figures: base names written as ``plots/{scorer}/{name}.png``.
        caption: reStructuredText caption of these tables and figures in ``snakemake --report``.
    """

    write: str
    caption: Path
    tables: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()


@dataclass
class ReportContext:
    """What a method's report step reads, and where it writes (one report job per scorer instance).

    Attributes:
        metrics_csv: the run's ``metrics.csv`` (every scorer's rows: reports compare instances).
        score_files: the instance's score parquets (their metadata names the instance, datasets and settings).
        detail_files: their details JSONs, in the same order.
        manifests: dataset name -> manifest CSV, for the instance's datasets.
        params: the instance's parameters (defaults filled in), report parameters included.
        tables_dir: where its tables go (``tables/{scorer}/``), html_dir: their HTML pages (``tables/html/{scorer}/``),
            figures_dir: where its figures go (``plots/{scorer}/``); None for a method that declares none of that kind.
    """

    metrics_csv: Path
    score_files: list[Path]
    detail_files: list[Path]
    manifests: dict[str, Path]
    params: dict[str, Any]
    tables_dir: Path | None
    figures_dir: Path | None
    html_dir: Path | None = None

    def __post_init__(self) -> None:
        self.metrics_csv = Path(self.metrics_csv)
        self.tables_dir, self.figures_dir, self.html_dir = (
            None if folder is None else Path(folder) for folder in (self.tables_dir, self.figures_dir, self.html_dir)
        )
        self.score_files, self.detail_files = [Path(f) for f in self.score_files], [Path(f) for f in self.detail_files]
        self.manifests = {name: Path(path) for name, path in self.manifests.items()}

    def table_files(self, name: str):
        """The files of the declared table ``name`` (:class:`fsad.evaluation.tables.TableFiles`)."""
        from fsad.evaluation.tables import TableFiles

        return TableFiles.named(self.tables_dir, name, self.html_dir)


@dataclass(frozen=True)
class Method:
    """A scoring method: its score step, what its jobs need, and optionally a fit and a report.

    Attributes:
        name: the value of ``method:`` in a scorer instance.
        score: ``"module:function"`` taking a ScoringContext, returning a ScoreResult.
        schema: the method's parameter schema (JSON schema as YAML, every default in it; shared fragments it
            includes are merged in by :func:`fsad.schemas.load_schema`).
        features: the cached features an instance with these parameters reads.
        needs: data and split requirements, checked before any job starts.
        fit: the learned artifact, if the method learns one.
        report: method-specific tables and figures.
        maps: whether the score step returns anomaly maps (pixel metrics and galleries need them).
        check: further config checks; returns an error message (naming the key and the fix) or None.
        generated: the generated images an instance with these parameters reads (none by default).
        members: the other instances whose score files an instance with these parameters reads (none by default).
        prompt_class_name: the object name prompts use for a category, from the parameters (score or fit ones);
            by default the readable name. Methods with a ``class_name_mode`` parameter declare
            :func:`fsad.text.class_names.configured_class_name`.
    """

    name: str
    score: str
    schema: Path
    features: Callable[[Params], FeatureNeeds] = lambda params: FeatureNeeds()
    needs: Needs = field(default_factory=Needs)
    fit: Fit | None = None
    report: Report | None = None
    maps: bool = True
    check: Callable[[Params, dict[str, Any]], str | None] = lambda params, config: None
    generated: Callable[[Params], Generated] = lambda params: Generated()
    members: Callable[[Params], Members] = lambda params: Members()
    prompt_class_name: Callable[[Params, str], str] = lambda params, category: _readable(category)

    def stage_names(self, stage: str) -> tuple[str, ...]:
        """The schema's properties read by ``stage`` (``fit``, ``score`` or ``report``), from their ``x-stages``."""
        return schema_stages(self.schema)[stage]

    def score_params(self, params: Params) -> Params:
        """The parameters a score job receives: those whose stages include ``score`` (never job selection)."""
        names = set(self.stage_names("score"))
        return {k: v for k, v in params.items() if k in names and k not in SELECTION_KEYS}

    def fit_params(self, params: Params) -> Params:
        """The parameters that change the fit (empty without a fit)."""
        return {k: params[k] for k in self.stage_names("fit") if k in params} if self.fit else {}

    def report_params(self, params: Params) -> Params:
        """The parameters only the method's report reads (a change reruns its report job, never a score job)."""
        return {k: params[k] for k in self.stage_names("report") if k in params} if self.report else {}
