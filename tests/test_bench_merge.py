"""A partial benchmark run folded into an earlier one (bench/merge.py): what is replaced, what is
kept, and the run each scenario is labelled with."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bench import benchmarks_md, merge
from bench import report as reports
from bench import targets as bench_targets
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


def test_every_target_of_the_issue_has_a_row_even_when_not_run() -> None:
    targets = bench_targets.evaluate(run("2026-12-01", "aaaaaaa", [], None))
    names = [t["target"] for t in targets]

    for wanted in (
        "commit → client, 1 subscriber",
        "one commit, 1,000 subscribers",
        "one commit, 10,000 subscribers",
        "server CPU per delivered update",
        "writes/s with 1,000 distinct live subscriptions",
        "writes touching no read set",
        "tracking overhead on writes",
        "precision on the chat workload",
        "10,000 idle connections per process",
    ):
        assert any(name.startswith(wanted) for name in names), wanted
    for pair in (
        "(reactive, daphne)",
        "(reactive, uvicorn)",
        "(reactive-redis, daphne)",
        "(reactive-redis, uvicorn)",
    ):
        assert any(name.startswith("commit → client") and name.endswith(pair) for name in names), pair
    for server in ("daphne", "uvicorn"):
        assert any(name.startswith("writes/s") and name.endswith(f"(reactive, {server})") for name in names)
    assert {t["verdict"] for t in targets} == {"not measured"}


def test_each_target_names_the_run_its_figures_come_from() -> None:
    earlier = full_run()
    later = run("2026-12-02", "bbbbbbb", ["fanout", "tracking"], ["reactive"])
    later["fanout"] = [{"system": "reactive", "server": "daphne", "from": "second"}]
    later["tracking"] = {"from": "second"}
    merged = merge.merge(earlier, later, "2026-12-01.json", "2026-12-02-fanout.json")

    def run_of(name: str, system: str, scenarios: tuple[str, ...]) -> str:
        return merge.run_of(merged, {"target": name, "system": system, "scenarios": list(scenarios)})

    assert run_of("fan-out", "reactive", ("fanout",)) == "2026-12-02 10:00, bbbbbbb"
    assert run_of("fan-out", "reactive-redis", ("fanout",)) == "2026-12-01 10:00, aaaaaaa"
    assert run_of("latency", "reactive", ("latency",)) == "2026-12-01 10:00, aaaaaaa"
    assert run_of("no read set", "reactive", ("writes", "tracking")) == (
        "2026-12-01 10:00, aaaaaaa; 2026-12-02 10:00, bbbbbbb"
    )
    assert (
        merge.run_of(earlier, {"scenarios": ["fanout"], "system": "reactive"}) == "2026-12-01 10:00, aaaaaaa"
    )
