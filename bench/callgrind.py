"""Instructions per unit of work, counted by callgrind: a CPU cost that a busy machine does not
change (``time.process_time`` on a machine shared with other work varies by a third).

A benchmark runs itself twice under ``valgrind --tool=callgrind``: once doing ``units`` of work
and once doing none (the same imports and set-up); the difference of the two instruction totals
divided by ``units`` is the cost of one. Each run's profile is kept (``--callgrind-out-file``), so
``callgrind_annotate`` of the two shows where the difference goes. ``PYTHONHASHSEED`` is fixed:
with random string hashes, dict probes vary by about 1 % from run to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence


def instructions(module: str, args: Sequence[str], out: str) -> int:
    """The instruction total of ``python -m module *args`` under callgrind, profile in ``out``."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind")
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        sys.executable, "-m", module, *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(command, check=True, env=env, capture_output=True)
    with open(out) as profile:
        for line in profile:
            found = re.match(r"(?:summary|totals): (\d+)", line)
            if found:
                return int(found[1])
    raise SystemExit(f"no instruction total in {out}")


def per_unit(module: str, work: Sequence[str], idle: Sequence[str], units: int, out: str) -> float:
    """Instructions per unit: ``work`` does ``units`` of it, ``idle`` the same set-up and none."""
    busy = instructions(module, work, f"{out}.work")
    base = instructions(module, idle, f"{out}.idle")
    return (busy - base) / units
