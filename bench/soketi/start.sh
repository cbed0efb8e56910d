#!/usr/bin/env bash
# Start soketi 1.6.1 (Node + native uWebSockets.js), the baseline reverbpy is benchmarked against.
# Copied from the project's soketi anchor recipe.
# Usage: start.sh PORT [APP_ID APP_KEY APP_SECRET]   (foreground; stop it by its PID)
# Installs once into $SOKETI_HOME (default ~/.cache/reverbpy-anchors/soketi) from the npm registry.
# The npm package pins uWebSockets.js to a git URL; the override in package.json swaps in an
# npm-published build of the same native module that loads on Node 20 with this glibc.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
home=${SOKETI_HOME:-$HOME/.cache/reverbpy-anchors/soketi}
port=${1:?usage: start.sh PORT [APP_ID APP_KEY APP_SECRET]}
mkdir -p "$home"
if [ ! -x "$home/node_modules/.bin/soketi" ] || ! cmp -s "$here/package.json" "$home/package.json"; then
  cp "$here/package.json" "$home/package.json"
  (cd "$home" && npm install --no-audit --no-fund --loglevel=error >&2)
fi
[ "${SOKETI_INSTALL_ONLY:-0}" = 1 ] && exit 0
export SOKETI_PORT="$port"
export SOKETI_HOST=${SOKETI_HOST:-127.0.0.1}
export SOKETI_METRICS_HOST=${SOKETI_METRICS_HOST:-127.0.0.1}
export SOKETI_METRICS_SERVER_PORT=${SOKETI_METRICS_SERVER_PORT:-$((port + 1000))}
export SOKETI_DEFAULT_APP_ID=${2:-app-id}
export SOKETI_DEFAULT_APP_KEY=${3:-app-key}
export SOKETI_DEFAULT_APP_SECRET=${4:-app-secret}
export SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES=${SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES:-true}
# User authentication stays off unless asked for: when on, soketi closes sockets that do not sign in within 30 s.
export SOKETI_DEFAULT_APP_USER_AUTHENTICATION=${SOKETI_DEFAULT_APP_USER_AUTHENTICATION:-false}
export SOKETI_DEBUG=${SOKETI_DEBUG:-0}
cd "$home"
exec node node_modules/@soketi/soketi/bin/server.js start
