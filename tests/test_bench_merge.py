"""A partial benchmark run folded into an earlier one (bench/merge.py): what is replaced, what is
kept, and the run each scenario is labelled with."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bench import benchmarks_md, merge
from bench import report as reports
from bench.plans import PLANS
from bench.suite import SCENARIOS


def run(date: str, commit: str, scenarios: list[str], systems: list[str] | None) -> dict[str, Any]:
    """An empty report of a full-plan run, as ``python -m bench`` starts one."""
    report = reports.new_report(PLANS["full"], "python -m bench", scenarios, systems)
    report["machine"].update(date=f"{date} 10:00:00 UTC", git_commit=commit)
    return report


def full_run() -> dict[str, Any]:
    report = run("2026-12-01", "aaaaaaa", list(SCENARIOS), None)
    report["fanout"] = [
        {"system": name, "server": "daphne", "from": "first"} for name in ("reactive", "dcrf")
    ]
    report["writes"] = {"from": "first"}
    report["tracking"] = {"from": "first"}
    report["precision"] = {"reactive": {"from": "first"}, "tables": {"from": "first"}}
    report["notes"] = ["dcrf: a baseline's limit"]
    return report


def test_every_scenario_has_its_sections() -> None:
    assert set(merge.SECTIONS) == set(SCENARIOS)


def test_a_rerun_of_some_systems_replaces_only_their_cells() -> None:
    earlier = full_run()
    later = run("2026-12-02", "bbbbbbb", ["fanout", "precision", "writes"], ["reactive"])
    later["fanout"] = [{"system": "reactive", "server": "daphne", "from": "second"}]
    later["precision"] = {"reactive": {"from": "second"}}
    # writes needs plain Django too: a run of "reactive" alone has none, and keeps the first run's.

    merged = merge.merge(earlier, later, "2026-12-01.json", "2026-12-02-fanout.json")

    assert sorted((c["system"], c["from"]) for c in merged["fanout"]) == [
        ("dcrf", "first"),
        ("reactive", "second"),
    ]
    assert merged["precision"] == {"reactive": {"from": "second"}, "tables": {"from": "first"}}
    assert merged["writes"] == {"from": "first"}
    assert merged["provenance"]["fanout"] == [[0, None], [1, ["reactive"]]]
    assert merged["provenance"]["writes"] == [[0, None]]
    assert merged["notes"] == ["[2026-12-01 10:00, aaaaaaa] dcrf: a baseline's limit"]
    assert earlier["fanout"][0]["from"] == "first"  # the earlier report is left as it was


def test_a_rerun_of_every_system_replaces_the_scenario() -> None:
    later = run("2026-12-02", "bbbbbbb", ["tracking"], None)
    later["tracking"] = {"from": "second"}
    merged = merge.merge(full_run(), later, "2026-12-01.json", "2026-12-02-tracking.json")
    again = run("2026-12-03", "ccccccc", ["tracking"], None)
    again["tracking"] = {"from": "third"}
    merged = merge.merge(merged, again, "2026-12-02-merged.json", "2026-12-03-tracking.json")

    assert merged["tracking"] == {"from": "third"}
    assert merged["provenance"]["tracking"] == [[2, None]]
    assert [s["commit"] for s in merged["sources"]] == ["aaaaaaa", "bbbbbbb", "ccccccc"]


def test_benchmarks_md_names_the_run_of_each_scenario(tmp_path: Path) -> None:
    later = run("2026-12-02", "bbbbbbb", ["tracking"], None)
    later["tracking"] = {"from": "second"}
    merged = merge.merge(full_run(), later, "2026-12-01.json", "2026-12-02-tracking.json")

    rows = dict(merge.runs_rows(merged))
    assert rows["tracking"] == "2026-12-02 10:00 at `bbbbbbb` (every system; `2026-12-02-tracking.json`)"
    assert rows["fanout"] == "2026-12-01 10:00 at `aaaaaaa` (every system; `2026-12-01.json`)"
    page = benchmarks_md._runs(merged)
    assert page[0] == "## Runs"
    assert benchmarks_md._runs(full_run()) == []


def test_runs_of_different_plans_do_not_merge() -> None:
    later = copy.deepcopy(full_run())
    later["plan"] = "quick"
    with pytest.raises(ValueError, match="cannot merge a quick run into a full run"):
        merge.merge(full_run(), later, "a.json", "b.json")
