"""Every input the fuzzing campaign ever failed on, replayed (``tests/fuzz/corpus/<target>/``).

``make fuzz`` saves a failing input under its target's directory; once the bug is fixed the
file stays, as a regression test. An input whose bug is known but not fixed yet is listed in
``OPEN`` with the reason: it is expected to fail (strictly, so the fix shows up as an XPASS
that asks for the entry to go).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import CORPUS, TARGETS

OPEN: dict[str, str] = {}

CASES = sorted(p for p in CORPUS.glob("*/*") if p.is_file() and p.parent.name in TARGETS)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_corpus_input(path: Path) -> None:
    key = f"{path.parent.name}/{path.name}"
    if key in OPEN:
        pytest.xfail(OPEN[key])  # raises: a run that passes is reported by the check below
    TARGETS[path.parent.name].check(path.read_bytes())


def test_open_entries_still_fail() -> None:
    """An ``OPEN`` entry whose input passes now: the bug was fixed, move it to the corpus proper."""
    if not OPEN:
        pytest.skip("no known, unfixed input")
    for key, reason in OPEN.items():
        target, _, name = key.partition("/")
        with pytest.raises(Exception):  # noqa: B017 (any failure of the check)
            TARGETS[target].check((CORPUS / target / name).read_bytes())
        assert reason
