"""harness/ports.py: the free ports that test servers listen on. `make test` runs its two passes
at once, so two processes ask for ports at the same time."""

from __future__ import annotations

import subprocess
import sys

from harness.ports import free_port

ASKED = 200


def test_processes_asking_at_once_are_never_handed_the_same_port() -> None:
    script = f"from harness.ports import free_port\nprint(*(free_port() for _ in range({ASKED})))"
    askers = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    here = [free_port() for _ in range(ASKED)]
    handed = [here] + [[int(port) for port in asker.communicate(timeout=60)[0].split()] for asker in askers]
    assert [len(ports) for ports in handed] == [ASKED] * 3
    every = [port for ports in handed for port in ports]
    assert len(set(every)) == len(every)
