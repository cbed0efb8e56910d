"""``make fuzz``: a long fuzzing campaign over the pure, in-process targets.

    python -m tests.fuzz.campaign [--cases N] [--seed S] [--target NAME ...] [--engine E] [--jobs J]

Each target (``tests.fuzz.targets``: frames, http1, pusher, http_api) runs ``--cases`` inputs
(a million by default) in a process of its own, ``--jobs`` at a time (2: both cores). The
engine is atheris (coverage-guided libFuzzer, ``uv sync --group fuzz``) when it is installed,
else a seeded random and mutational driver started from the targets' seeds. The seed is
printed; the same seed, engine and case count replay the same random campaign. Every failing
input is saved under ``tests/fuzz/corpus/<target>/`` (``test_corpus.py`` replays them all) and
the exit status is non-zero when any target failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

TARGET_NAMES = ("pusher", "frames", "http1", "http_api")  # the slowest first: shorter wall time
SAVED_PER_KIND = 3
"""Inputs saved for each kind of failure (exception type and place): the rest are counted."""


def _kind(exc: BaseException) -> str:
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if "/site-packages/" not in f.filename
    ]
    where = frames[-1] if frames else None
    place = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    return f"{type(exc).__name__} at {place}"


class Recorder:
    """Runs one input through a target's check; counts and keeps the failures."""

    def __init__(self, target: str, check: Callable[[bytes], None], cases: int) -> None:
        self.target, self.check, self.cases = target, check, cases
        self.done = 0
        self.failures: Counter[str] = Counter()
        self.saved: list[str] = []
        self.start = time.monotonic()
        self._progress = self.start

    def __call__(self, data: bytes) -> bool:
        self.done += 1
        failed = False
        try:
            self.check(data)
        except Exception as exc:
            failed = True
            kind = _kind(exc)
            self.failures[kind] += 1
            if self.failures[kind] <= SAVED_PER_KIND:
                from tests.fuzz.targets import save_failure

                path = save_failure(self.target, data)
                self.saved.append(str(path))
                print(f"[{self.target}] {kind}: {str(exc)[:300]!r} -> {path}", file=sys.stderr)
        now = time.monotonic()
        if now - self._progress >= 30:
            self._progress = now
            rate = self.done / (now - self.start)
            print(f"[{self.target}] {self.done}/{self.cases} ({rate:.0f}/s)", file=sys.stderr)
        return failed

    def summary(self, engine: str, seed: int) -> dict[str, object]:
        seconds = time.monotonic() - self.start
        return {
            "target": self.target,
            "engine": engine,
            "seed": seed,
            "cases": self.done,
            "seconds": round(seconds, 1),
            "rate": round(self.done / seconds) if seconds else 0,
            "failures": sum(self.failures.values()),
            "kinds": dict(self.failures),
            "saved": self.saved,
        }


# --- the random and mutational driver ------------------------------------------------------------


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        i = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(i, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(i, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del buf[i : i + rng.randint(1, 16)]
        elif op == 4 and buf:
            j = rng.randrange(len(buf))
            buf[i:i] = buf[j : j + rng.randint(1, 32)]
        elif op == 5:
            del buf[i:]
        else:
            other = rng.choice(pool)
            buf[i:] = other[rng.randrange(len(other) + 1) :]
    return bytes(buf)


def run_random(recorder: Recorder, seeds: list[bytes], seed: int) -> None:
    rng = random.Random(seed)
    pool = [s for s in seeds] or [b""]
    for data in pool:
        recorder(data)
    while recorder.done < recorder.cases:
        if rng.random() < 0.5:
            data = rng.randbytes(rng.choice((8, 32, 128, 512, 1024)))
            data = data[: rng.randrange(len(data) + 1)]
        else:
            data = mutate(rng, rng.choice(pool), pool)
        if recorder(data) and len(pool) < 1000:
            pool.append(data)  # a failing input is worth mutating further


# --- atheris ----------------------------------------------------------------------------------


def run_atheris(target: str, cases: int, seed: int) -> None:
    """libFuzzer over the target, ``cases`` inputs; exits the process itself with the summary."""
    import atheris

    with atheris.instrument_imports(include=["reverbpy", "websockets", "h11", "tests.fuzz"]):
        from tests.fuzz.targets import TARGETS

    chosen = TARGETS[target]
    recorder = Recorder(target, chosen.check, cases)

    def one_input(data: bytes) -> None:
        recorder(data)
        if recorder.done >= cases:
            _finish(recorder.summary("atheris", seed))

    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    for i, data in enumerate(seeds_of(target)):
        (work / f"seed-{i}").write_bytes(data)
    argv = [
        sys.argv[0], f"-seed={seed}", f"-runs={cases * 2}", "-max_len=4096", "-timeout=60",
        "-rss_limit_mb=1536", "-print_final_stats=0", "-print_pcs=0", f"-artifact_prefix={work}/", str(work),
    ]  # fmt: skip
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    _finish(recorder.summary("atheris", seed))  # pragma: no cover (libFuzzer exits first)


def seeds_of(target: str) -> list[bytes]:
    """The target's seeds and every input saved in its corpus (failures found before)."""
    from tests.fuzz.targets import CORPUS, TARGETS

    saved = sorted((CORPUS / target).glob("*")) if (CORPUS / target).is_dir() else []
    return TARGETS[target].seeds() + [p.read_bytes() for p in saved]


def _finish(summary: dict[str, object]) -> None:
    print("RESULT " + json.dumps(summary), flush=True)
    sys.stderr.flush()
    os._exit(1 if summary["failures"] else 0)


# --- the command ----------------------------------------------------------------------------------


def worker(target: str, cases: int, seed: int, engine: str) -> None:
    if engine == "atheris":
        run_atheris(target, cases, seed)
        return
    from tests.fuzz.targets import TARGETS

    chosen = TARGETS[target]
    recorder = Recorder(target, chosen.check, cases)
    run_random(recorder, seeds_of(target), seed)
    _finish(recorder.summary("random", seed))


COVERAGE_GUIDED = ("frames", "http1")
"""The pure parsers, where atheris pays: the structured targets (``pusher``, ``http_api``) run
four times slower under its instrumentation and gain less from coverage than from volume."""


def default_engine(target: str) -> str:
    if target not in COVERAGE_GUIDED:
        return "random"
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "random"
    return "atheris"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz.campaign", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--cases", type=int, default=1_000_000, help="inputs per target (default 1,000,000)"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
    parser.add_argument(
        "--target", action="append", choices=TARGET_NAMES, help="repeatable; default: all"
    )
    parser.add_argument("--engine", choices=("atheris", "random"), default=None,
                        help="default: atheris (if installed) for frames and http1, random for the others")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="targets run at once (default 2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    targets = args.target or list(TARGET_NAMES)
    engines = {t: args.engine or default_engine(t) for t in targets}
    if args.worker:
        worker(targets[0], args.cases, seed, engines[targets[0]])
        return 0
    logs = Path(tempfile.mkdtemp(prefix="fuzz-logs-"))
    print(f"fuzz campaign: seed {seed}, {args.cases:,} cases per target, {args.jobs} at a time: "
          f"{', '.join(f'{t} ({e})' for t, e in engines.items())}; logs in {logs}", flush=True)  # fmt: skip
    start = time.monotonic()
    results: list[dict[str, object]] = []
    pending = list(enumerate(targets))
    running: list[tuple[str, subprocess.Popen[str]]] = []
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    while pending or running:
        while pending and len(running) < args.jobs:
            i, target = pending.pop(0)
            command = [sys.executable, "-m", "tests.fuzz.campaign", "--worker", "--target", target,
                       "--cases", str(args.cases), "--seed", str(seed + i), "--engine", engines[target]]  # fmt: skip
            with (logs / f"{target}.log").open("w") as log:  # libFuzzer's chatter, the failures
                proc = subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=log, text=True, env=env
                )
            running.append((target, proc))
        time.sleep(0.5)
        for target, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((target, proc))
            out = proc.stdout.read() if proc.stdout else ""
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            if lines:
                result = json.loads(lines[-1][len("RESULT ") :])
            else:  # died without a summary (a crash inside libFuzzer, out of memory...)
                result = {"target": target, "engine": engines[target], "seed": None, "cases": 0,
                          "seconds": 0, "rate": 0, "failures": 1, "kinds": {f"exit {proc.returncode}": 1}}  # fmt: skip
            results.append(result)
            print(f"  {target:9} {result['engine']:8} {result['cases']:>9,} cases  {result['seconds']:>7}s  "
                  f"{result['rate']:>7,}/s  seed {result['seed']}  failures {result['failures']}"
                  + (f"  {result['kinds']}" if result["failures"] else ""), flush=True)  # fmt: skip
    wall = time.monotonic() - start
    failed = [r for r in results if r["failures"]]
    print(f"fuzz campaign: {len(results)} targets in {wall:.0f}s wall, seed {seed}, "
          f"{'FAILED: ' + ', '.join(str(r['target']) for r in failed) if failed else 'no failures'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
