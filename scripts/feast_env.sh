#!/usr/bin/env bash
# Create .venv-feast: a venv apart from .venv with the real Feast SDK (Redis online store), for
# tests and benchmarks that check Switchyard's `kind: feast` reader against Feast itself.
# It has to be apart because feast[redis] 0.67 pins redis<8 (the main venv has redis 8) and
# pandas<3, and pulls dask and SQLAlchemy, none of which the gateway needs: the gateway reads
# Feast's registry and Redis layout with its own code.
#
# Idempotent: a second run only checks a marker and the imports, then prints the python path.
# Prints nothing but that path on stdout (pip's output goes to stderr), so callers can do
#   PY=$(scripts/feast_env.sh)
# PYTHON picks the interpreter that creates the venv (default python3.11); FEAST_VENV its folder.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${FEAST_VENV:-.venv-feast}
# Pinned so the layout tests compare against one Feast; bump together with the marker below.
FEAST_VERSION=0.67.0
MARKER="$VENV/.switchyard-feast-env-v1"
CHECK='import feast, feast.infra.online_stores.redis, redis, pyarrow'

if [ -f "$MARKER" ] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    echo "$(cd "$VENV" && pwd)/bin/python"
    exit 0
fi

{
    # Serialise concurrent first runs (parallel test processes); the winner does the work.
    mkdir -p "$VENV"
    exec 9>"$VENV/.setup.lock"
    flock 9
    if [ ! -f "$MARKER" ] || ! "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
        rm -f "$MARKER"
        if [ ! -x "$VENV/bin/python" ]; then
            # Feast 0.67 supports CPython 3.10 to 3.12.
            "$PYTHON" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' \
                || { echo "feast_env.sh needs Python 3.10 to 3.12 ($PYTHON is not)" >&2; exit 1; }
            "$PYTHON" -m venv "$VENV"
        fi
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet "feast[redis]==$FEAST_VERSION"
        "$VENV/bin/python" -c "$CHECK"
        touch "$MARKER"
    fi
} >&2

echo "$(cd "$VENV" && pwd)/bin/python"
