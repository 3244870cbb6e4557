"""The report's plots, as PNG files beside the JSON (matplotlib, Agg backend: no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.systems import SYSTEMS

STYLE = {  # system -> (color, marker)
    "reactive": ("#1f77b4", "o"),
    "reactive-redis": ("#17becf", "s"),
    "tables": ("#9467bd", "v"),
    "dcrf": ("#d62728", "^"),
    "poll-1s": ("#7f7f7f", "x"),
    "poll-100ms": ("#bcbd22", "+"),
}


def _series(
    cells: list[dict[str, Any]], metric: str, **where: Any
) -> dict[tuple[str, str], list[tuple[int, dict]]]:
    series: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for cell in cells:
        if any(cell.get(k) != v for k, v in where.items()) or not cell.get("summary"):
            continue
        value = cell["summary"].get(metric)
        if value:
            series.setdefault((cell["system"], cell["server"]), []).append((cell["subscribers"], value))
    return series


def _lines(axes: Any, series: dict[tuple[str, str], list[tuple[int, dict]]]) -> None:
    for (system, server), points in series.items():
        points.sort()
        color, marker = STYLE.get(system, ("black", "."))
        xs = [n for n, _ in points]
        ys = [v["median"] for _, v in points]
        low = [v["median"] - v["min"] for _, v in points]
        high = [v["max"] - v["median"] for _, v in points]
        axes.errorbar(
            xs, ys, yerr=[low, high], color=color, marker=marker, capsize=3,
            linestyle="--" if server == "uvicorn" else "-",
            label=f"{SYSTEMS[system].label}, {server}" if system in SYSTEMS else system,
        )  # fmt: skip
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)


def draw(report: dict[str, Any], directory: Path) -> list[Path]:
    """Every plot the run has data for; returns their paths."""
    paths = []
    cells = report["latency"]
    rates = sorted({c["rate"] for c in cells})
    if rates:
        figure, axes = plt.subplots(1, len(rates), figsize=(6 * len(rates), 4.5), squeeze=False)
        for ax, rate in zip(axes[0], rates, strict=True):
            _lines(ax, _series(cells, "p99", rate=rate))
            ax.set_title(f"commit → client p99, {rate:g} writes/s")
            ax.set_xlabel("subscribers (over up to 100 instances)")
            ax.set_ylabel("ms")
        axes[0][0].legend(fontsize=7)
        paths.append(_save(figure, directory / "latency.png"))
    if report["fanout"]:
        figure, ax = plt.subplots(figsize=(6, 4.5))
        _lines(ax, _series(report["fanout"], "last_p99"))
        ax.set_title("fan-out: last receiver p99, one write")
        ax.set_xlabel("subscribers of one instance")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7)
        paths.append(_save(figure, directory / "fanout.png"))
    writes = report.get("writes")
    if writes:
        labels, values, errors, colors = [], [], [], []
        for phase, rows in writes["phases"].items():
            for name, row in rows.items():
                if name.startswith("_") or not row["writes_per_s"]:
                    continue
                spread = row["writes_per_s"]
                labels.append(f"{name} [{phase}]")
                values.append(spread["median"])
                errors.append([spread["median"] - spread["min"], spread["max"] - spread["median"]])
                colors.append(STYLE.get(row["system"], ("#2ca02c", ""))[0])
        figure, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.2))
        ax.barh(
            range(len(labels)), values, xerr=list(zip(*errors, strict=True)) if errors else None, color=colors
        )
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("writes/s (closed loop)")
        ax.set_title("write throughput")
        ax.grid(True, axis="x", alpha=0.3)
        paths.append(_save(figure, directory / "writes.png"))
    return paths


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
