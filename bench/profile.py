"""The profile of the hot path: py-spy on the server while writes fan out to N subscribers of one
instance, for each N of ``profile_subscribers`` (at its rate of ``profile_rates``: two writes a
second to 1,000, one every two seconds to 10,000, as the fan-out scenario spaces them).

Two recordings under the same load, one after the other: a flame graph (SVG) to look at, and the
collapsed stacks (``--format raw``) summarised here: the functions where the samples are (self)
and those under which they are (inclusive), as shares of the samples. ``--nonblocking``: py-spy
reads the server's memory without stopping it, so the profile does not slow what it measures.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import Broken
from bench.fanout import FANOUT_KEY
from bench.plans import Plan
from bench.population import Population
from bench.servers import without_machine_paths
from bench.window import write

RATE_HZ = 250
TOP = 15


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise Broken("py-spy is not installed (pip install -r requirements.txt)")
    return found


async def record(pid: int, seconds: float, path: Path, fmt: str) -> None:
    process = await asyncio.create_subprocess_exec(
        py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(RATE_HZ),
        "--nonblocking", "--format", fmt, "--output", str(path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    if process.returncode != 0 or not path.exists():
        raise Broken(f"py-spy failed ({process.returncode}): {output.decode(errors='replace')[-800:]}")
    path.write_text(without_machine_paths(path.read_text()))  # its title names the command and file


def summarise(collapsed: str) -> dict[str, Any]:
    """Self and inclusive shares of the samples per function (``name (file)`` frames). The
    inclusive list leaves out the frames over more than half the samples (the event loop's and
    the server's main loop: everything is under them)."""
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [frame_name(frame) for frame in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            under[frame] += samples
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [[frame, round(n / total, 4)] for frame, n in own.most_common(TOP)],
        "inclusive": [[frame, round(n / total, 4)] for frame, n in under.most_common() if n <= total / 2][
            :TOP
        ],
    }


def frame_name(frame: str) -> str:
    """``function (path/file.py:line)`` -> ``function (package/file.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0].rstrip(")")
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


async def profile_fanout(
    population: Population, plan: Plan, directory: Path, n: int, rate: float
) -> dict[str, Any]:
    deployed = population.deployed
    await deployed.reset_counters(FANOUT_KEY, 1)
    await population.subscribe({i: [FANOUT_KEY] for i in range(n)})
    pid = deployed.serving["server"]
    name = f"profile-fanout-{n}-{deployed.asgi_server}"
    svg, raw = directory / f"{name}.svg", directory / f"{name}.txt"
    seconds = plan.profile_seconds / 2
    writes = max(2, int(plan.profile_seconds * rate) + 2)  # across both recordings
    load = asyncio.create_task(write(population, [FANOUT_KEY], rate, writes))
    await asyncio.sleep(0.5)
    await record(pid, seconds, svg, "flamegraph")
    await record(pid, seconds, raw, "raw")
    await load
    summary = summarise(raw.read_text())
    raw.unlink()
    return {"system": deployed.system.name, "server": deployed.asgi_server, "subscribers": n,
            "rate": rate, "flame_graph": svg.name, "seconds": seconds, **summary}  # fmt: skip
