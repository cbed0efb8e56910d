"""Run the soak scenarios at full size: ``python -m tests.soak [--scenario NAME] [--scale full|short]``.

Prints one line per scenario (PASS/FAIL, wall time, its figures) and writes every figure as
JSON to ``--out`` (default ``build/soak.json``). Exits 1 if a scenario failed. Server logs are
kept under ``build/soak-work/<scenario>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import ROOT
from tests.soak.scenarios import SCENARIOS, SIZES, SoakFailure


async def run(names: list[str], scale: str, workroot: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in names:
        size, kwargs = SIZES[scale][name]
        workdir = workroot / name
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        started = time.monotonic()
        try:
            figures = await SCENARIOS[name](size, workdir, **kwargs)
            outcome = "PASS"
        except SoakFailure as exc:
            figures, outcome = exc.figures, "FAIL"
        except Exception as exc:
            figures, outcome = {"error": repr(exc), "traceback": traceback.format_exc()}, "ERROR"
        wall = round(time.monotonic() - started, 1)
        results[name] = {"outcome": outcome, "size": size, "wall_s": wall, "figures": figures}
        line = orjson.dumps(figures).decode()
        print(f"{name:<15} {outcome:<5} {wall:>6.1f}s size={size} {line}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); default: all",
    )
    parser.add_argument("--scale", choices=sorted(SIZES), default="full")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "soak.json")
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    started = time.monotonic()
    results = asyncio.run(run(names, args.scale, ROOT / "build" / "soak-work"))
    total = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(
        orjson.dumps(
            {"scale": args.scale, "wall_s": total, "scenarios": results}, option=orjson.OPT_INDENT_2
        )
    )
    failed = [n for n, r in results.items() if r["outcome"] != "PASS"]
    print(f"{len(names) - len(failed)}/{len(names)} passed in {total}s; figures in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
