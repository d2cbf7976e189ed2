"""The workflow's DAG of a config, built in process through Snakemake's API with no job run, and what a config
change replans.

:func:`build_dag` parses the Snakefile with the embedded default (``config/config.yaml``) plus overlay mappings
(merged as ``--configfile`` files merge: mappings merge, lists replace; ``None`` deletes a key, e.g. an instance),
passed as the whole config, and returns every job's rule, wildcards,
output and input files and params. :func:`replan` compares two DAGs as Snakemake decides reruns: a job reruns when
its params (the reprs of its non-derived params) or its input list change, when it is new, and when any job upstream
of it (by files) reruns.

Builds in one process do not leak into each other: every parse executes the Snakefile in fresh globals, so the
``functools.cache`` helpers of ``rules/common.smk`` are new each time (``test_inputs.py`` checks this). The
parse of the ``.smk`` files and the YAML loads of the config and its schema are memoized by content: they cost most
of a build and do not depend on the config.
"""

from __future__ import annotations

import copy
import fnmatch
import io
import json
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PlannedJob:
    """One job of a DAG: ``label`` is ``rule:wildcard/values`` with each backbone directory written as its name."""

    rule: str
    label: str
    wildcards: dict[str, str]
    output: tuple[str, ...]
    input: tuple[str, ...]
    params: dict[str, str]

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        return self.rule, self.output

    def rerun_signature(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What Snakemake compares with its records: the sorted param reprs and the sorted input list."""
        return tuple(sorted(self.params.values())), tuple(sorted(self.input))


@dataclass
class Dag:
    config: dict[str, Any]
    jobs: dict[tuple[str, tuple[str, ...]], PlannedJob]

    def labelled(self, pattern: str) -> list[PlannedJob]:
        return [job for job in self.jobs.values() if fnmatch.fnmatchcase(job.label, pattern)]

    def of_rule(self, rule: str) -> list[PlannedJob]:
        return [job for job in self.jobs.values() if job.rule == rule]

    def producer(self, path: str) -> PlannedJob:
        (job,) = [job for job in self.jobs.values() if path in job.output]
        return job


def merged(*overlays: dict[str, Any]) -> dict[str, Any]:
    """The default config with ``overlays`` merged in order as Snakemake merges config files (mappings key by key,
    anything else replaces); ``None`` deletes the key."""
    out = copy.deepcopy(_default_config())
    for overlay in overlays:
        _merge_into(out, overlay)
    return out


def _merge_into(out: dict[str, Any], overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            _merge_into(out[key], value)
        else:
            out[key] = copy.deepcopy(value)


@cache
def _default_config() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _label(rule: str, wildcards: dict[str, str]) -> str:
    values = [value.rsplit("-", 1)[0] if name == "backbone" else value for name, value in wildcards.items()]
    return f"{rule}:{'/'.join(values)}"


_PATCHED = False


def _memoize_parsing() -> None:
    """Memoize Snakemake's translation of each ``.smk`` file and its YAML loads (config, schema), keyed by content."""
    global _PATCHED
    if _PATCHED:
        return
    import snakemake.api  # noqa: F401  (imports snakemake.workflow in the order Snakemake expects)
    import snakemake.common.configfile as configfile
    import snakemake.utils as utils
    import snakemake.workflow as workflow

    parse, load = workflow.parse, configfile._load_configfile
    parsed: dict[Any, Any] = {}
    loaded: dict[str, Any] = {}

    def cached_parse(snakefile, wf, rulecount=0, linemap=None, **kwargs):
        key = (snakefile.get_path_or_uri(secret_free=True), rulecount, Path(str(snakefile.get_path_or_uri(secret_free=True))).read_text())
        if key not in parsed:
            lines: dict[int, int] = {}
            code, count = parse(snakefile, wf, rulecount=rulecount, linemap=lines, **kwargs)
            parsed[key] = code, count, lines
        code, count, lines = parsed[key]
        if linemap is not None:
            linemap.update(lines)
        return code, count

    def cached_load(source, filetype="Config"):
        if isinstance(source, (str, Path)):
            text = Path(source).read_text(encoding="utf-8")
        else:
            with source as handle:
                text = handle.read()
            text = text.decode() if isinstance(text, bytes) else text
        if text not in loaded:
            loaded[text] = load(io.StringIO(text), filetype)
        return copy.deepcopy(loaded[text])

    workflow.parse = cached_parse
    configfile._load_configfile = cached_load
    utils._load_configfile = cached_load
    _PATCHED = True


def build_dag(*overlays: dict[str, Any], workdir: Path | None = None) -> Dag:
    """The DAG of the embedded default plus ``overlays``, planned in ``workdir`` (by default one temporary directory
    shared by every build of the session: planning writes nothing there but Snakemake's empty metadata folders).
    Builds are memoized by config."""
    return _build(json.dumps(merged(*overlays), sort_keys=True), str(workdir or _shared_workdir()))


@cache
def _shared_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fsad-dag-"))


@cache
def _build(overlay_json: str, workdir: str) -> Dag:
    _memoize_parsing()
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    overlay = json.loads(overlay_json)
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            # the whole config, as a --configfile is: nothing of the default stays unless the merge kept it
            config_settings=ConfigSettings(config=overlay, replace_workflow_config=True),
            snakefile=ROOT / "Snakefile",
            workdir=Path(workdir),
        )
        workflow = workflow_api._workflow
        workflow.dag_settings = DAGSettings()
        workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        jobs = {}
        for job in workflow.dag.jobs:
            tracked = job.non_derived_params
            params = {name: repr(value) for name, value in job.params.items() if any(value is kept for kept in tracked)}
            wildcards = dict(job.wildcards_dict)
            planned = PlannedJob(
                rule=job.rule.name,
                label=_label(job.rule.name, wildcards),
                wildcards=wildcards,
                output=tuple(sorted(map(str, job.output))),
                input=tuple(sorted(map(str, job.input))),
                params=params,
            )
            jobs[planned.key] = planned
        return Dag(config=copy.deepcopy(dict(workflow.config)), jobs=jobs)


@dataclass
class Replan:
    """What a change replans: ``changed`` (own params or inputs differ, or new), ``replanned`` (those and every job
    downstream of them, by files, in the new DAG) and ``removed`` (jobs of the old DAG the new one lacks)."""

    changed: set[str] = field(default_factory=set)
    replanned: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)

    def by_rule(self) -> dict[str, list[str]]:
        """Replanned labels grouped by rule (the label carries the instance of fit, score and report jobs)."""
        groups: dict[str, list[str]] = {}
        for label in sorted(self.replanned):
            groups.setdefault(label.split(":", 1)[0], []).append(label)
        return groups


def replan(old: Dag, new: Dag) -> Replan:
    changed = {key for key, job in new.jobs.items() if key not in old.jobs or old.jobs[key].rerun_signature() != job.rerun_signature()}
    readers: dict[str, list[tuple]] = {}
    for key, job in new.jobs.items():
        for path in job.input:
            readers.setdefault(path, []).append(key)
    replanned, todo = set(changed), list(changed)
    while todo:
        for path in new.jobs[todo.pop()].output:
            for reader in readers.get(path, ()):
                if reader not in replanned:
                    replanned.add(reader)
                    todo.append(reader)
    return Replan(
        changed={new.jobs[key].label for key in changed},
        replanned={new.jobs[key].label for key in replanned},
        removed={job.label for key, job in old.jobs.items() if key not in new.jobs},
    )


def select(labels: Iterable[str], patterns: Iterable[str]) -> set[str]:
    """The labels matching any pattern (fnmatch) and no ``!``-prefixed one."""
    patterns = list(patterns)
    keep = [p for p in patterns if not p.startswith("!")]
    drop = [p[1:] for p in patterns if p.startswith("!")]
    return {
        label
        for label in labels
        if any(fnmatch.fnmatchcase(label, p) for p in keep) and not any(fnmatch.fnmatchcase(label, p) for p in drop)
    }
