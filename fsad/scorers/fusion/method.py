"""The ``fusion`` method declaration (parameters in ``schema.yaml``): it reads its members' score files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad.scorers.method import Members, Method, Needs, Params, Report

TABLES = ("members", "weights")


def _members(params: Params) -> Members:
    return Members(tuple(params["members"]), dict(params["validation"]))


def _check(params: Params, config: dict[str, Any]) -> str | None:
    if params["score_weights"] != "equal" and params["score_weights"] not in params["distributions"]:
        return f"score_weights is {params['score_weights']!r} but distributions are {params['distributions']}; use equal or one of them"
    return None


METHOD = Method(
    name="fusion",
    score="fsad.scorers.fusion.scorer:score",
    schema=Path(__file__).with_name("schema.yaml"),
    needs=Needs(min_validation_normals=lambda params: 1),
    members=_members,
    report=Report(write="fsad.scorers.fusion.report:write_report", caption=Path(__file__).with_name("report.rst"), tables=TABLES),
    check=_check,
)
