#!/usr/bin/env bash
# `make test-oldest`: the test suite on the lowest runtime versions pyproject.toml declares.
#
# The package's own dependencies are ranges (users install reverbpy next to other things), so the
# lower bound of each range is a promise: this installs exactly that version of every runtime
# dependency (`name>=X` becomes `name==X`), takes the test tools from uv.lock where they fit,
# and runs pytest. Usage: scripts/test-oldest.sh UV PYTHON VENV
set -euo pipefail
uv=$1 python=$2 venv=$3
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Lower bounds of the runtime dependencies and the extras the tests use.
"$python" - "$work/oldest.txt" <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
deps = project["dependencies"] + extras["fast"] + extras["redis"] + extras["nats"] + extras["examples"]
pins = []
for dep in deps:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][^,;\s]*)(;.*)?", dep.strip())
    if not m:
        sys.exit(f"test-oldest: {dep!r} has no plain lower bound")
    pins.append(f"{m[1]}=={m[2]}{m[3] or ''}")
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
print("lowest declared:", ", ".join(p.split(";")[0] for p in pins))
PY

# The dev group from the lock, less every package the runtime pulls in (aiohttp and its own
# dependencies...) and the aiohttp pytest plugin, which follows aiohttp: the solver is free to
# pick what goes with the oldest pins, and everything else stays as locked.
skip=(--no-emit-package pytest-aiohttp)
while read -r name; do skip+=(--no-emit-package "$name"); done < <(
  "$uv" export --locked --no-default-groups --all-extras --no-hashes --no-emit-project \
    --format requirements-txt | grep -oE '^[A-Za-z0-9_.-]+')
"$uv" export --locked --only-group dev --no-hashes --no-emit-project "${skip[@]}" \
  --format requirements-txt -o "$work/dev.txt" >/dev/null

[ -x "$venv/bin/python" ] || "$uv" venv --quiet --python "$python" "$venv"
VIRTUAL_ENV="$venv" "$uv" pip install --quiet \
  -e '.[fast,redis,nats,examples]' -r "$work/dev.txt" pytest-aiohttp \
  --constraint "$work/oldest.txt"
VIRTUAL_ENV="$venv" "$uv" pip list 2>/dev/null \
  | grep -Ei '^(aiohttp|orjson|pydantic-settings|pydantic|redis|nats-py|prometheus-client|uvloop|pusher) '
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${@:4}"
