"""A partial run folded into an earlier run's report, each figure labelled with the run it is from.

``python -m bench --scenarios fanout,writes --merge results/<date>.json`` reruns two scenarios
(after a change that should move them) and renders ``BENCHMARKS.md`` from the earlier report
with those scenarios replaced. What the partial run measured replaces, per scenario:

- every system's cells, or with ``--systems`` only the cells of those systems (latency, fan-out,
  profile) or their entries (precision);
- the scenario's one section (writes, tracking, external writes, the Redis diagnostics), unless
  the partial run has none of it (its systems could not run it), which keeps the earlier one.

``report["sources"]`` lists the runs (date, git commit, command, JSON file), and
``report["provenance"]`` says for each scenario which run it comes from (and for which systems):
``BENCHMARKS.md`` prints both. Notes and problems keep the date and commit of their run. The
targets are judged again on the merged figures.
"""

from __future__ import annotations

import copy
from typing import Any

# The report's keys each scenario fills (bench.suite).
SECTIONS: dict[str, tuple[str, ...]] = {
    "latency": ("latency",),
    "fanout": ("fanout", "redis_distinct"),
    "external": ("external",),
    "writes": ("writes",),
    "precision": ("precision",),
    "tracking": ("tracking",),
    "profile": ("profile",),
    "roundtrips": ("roundtrips",),
    "lag": ("lag",),
}


def is_partial(scenarios: list[str], systems: list[str] | None) -> bool:
    """Whether a run leaves out a scenario or a system."""
    return set(scenarios) != set(SECTIONS) or systems is not None


def source(report: dict[str, Any], json_name: str) -> dict[str, Any]:
    machine = report["machine"]
    return {
        "date": machine["date"],
        "commit": machine.get("git_commit"),
        "command": machine["command"],
        "json": json_name,
        "scenarios": report["scenarios"],
        "systems": report["systems"],
    }


def label(run: dict[str, Any]) -> str:
    return f"[{run['date'][:16]}, {run['commit']}]"


def _fold(earlier: Any, later: Any, systems: set[str] | None) -> tuple[Any, bool]:
    """The merged value of one report key, and whether the later run's replaced anything."""
    if later is None or later == [] or later == {}:
        return earlier, False
    if systems is None:
        return later, True
    if isinstance(later, list):  # cells or profiles, each of one system
        kept = [c for c in earlier or [] if c.get("system", "reactive") not in systems]
        return kept + later, True
    if isinstance(later, dict) and all(key in systems for key in later):  # precision: per system
        return {**(earlier or {}), **later}, True
    return later, True


def merge(
    earlier: dict[str, Any], later: dict[str, Any], earlier_json: str, later_json: str
) -> dict[str, Any]:
    """``earlier`` with what ``later`` (a partial run of the same plan) measured."""
    if earlier["plan"] != later["plan"]:
        raise ValueError(f"cannot merge a {later['plan']} run into a {earlier['plan']} run")
    merged = copy.deepcopy(earlier)
    sources = merged.setdefault("sources", [source(earlier, earlier_json)])
    provenance = merged.setdefault("provenance", {scenario: [[0, None]] for scenario in earlier["scenarios"]})
    if "sources" not in earlier:  # the earlier run's own notes, labelled once
        first = label(sources[0])
        merged["notes"] = [f"{first} {note}" for note in earlier["notes"]]
        merged["problems"] = [f"{first} {problem}" for problem in earlier["problems"]]
    sources.append(source(later, later_json))
    run = len(sources) - 1
    systems = set(later["systems"]) if later["systems"] else None
    for scenario in later["scenarios"]:
        replaced = False
        for key in SECTIONS[scenario]:
            merged[key], changed = _fold(merged.get(key), later.get(key), systems)
            replaced |= changed
        if not replaced:
            continue
        if systems is None:
            provenance[scenario] = [[run, None]]
        else:
            provenance.setdefault(scenario, []).append([run, sorted(systems)])
    merged["scenarios"] = [s for s in SECTIONS if s in provenance]
    tag = label(sources[run])
    merged["notes"] += [f"{tag} {note}" for note in later["notes"]]
    merged["problems"] += [f"{tag} {problem}" for problem in later["problems"]]
    return merged


def runs_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per scenario: the run (date, commit) its figures come from, per system."""
    sources = report.get("sources") or []
    rows = []
    for scenario, entries in (report.get("provenance") or {}).items():
        parts = []
        for run, systems in entries:
            src = sources[run]
            where = "every system" if systems is None else ", ".join(systems)
            parts.append(f"{src['date'][:16]} at `{src['commit']}` ({where}; `{src['json']}`)")
        rows.append([scenario, "; later: ".join(parts)])
    return rows
