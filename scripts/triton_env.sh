#!/usr/bin/env bash
# Create .venv-triton: a venv apart from .venv with PyTriton (which ships a CPU-capable
# `tritonserver` binary) and ONNX Runtime, for tests and benchmarks against a real Triton server.
# It has to be apart because nvidia-pytriton 0.7 needs numpy<2 and tritonclient~=2.50, while the
# main venv has numpy 2 and tritonclient>=2.70.
#
# Idempotent: a second run only checks a marker and the imports, then prints the python path.
# Prints nothing but that path on stdout (pip's output goes to stderr), so callers can do
#   PY=$(scripts/triton_env.sh)
# PYTHON picks the interpreter that creates the venv (default python3.11); TRITON_VENV its folder.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${TRITON_VENV:-.venv-triton}
# Pinned so every machine serves with the same Triton; bump together with the marker below.
PYTRITON_VERSION=0.7.0
# onnxruntime >= 1.19 is built against numpy 2 yet supports numpy >= 1.21.6 at run time.
ONNXRUNTIME_SPEC="onnxruntime>=1.19,<2"
MARKER="$VENV/.switchyard-triton-env-v1"
CHECK='import numpy, onnxruntime, pytriton, pytriton.triton'

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
            # PyTriton ships Python-backend stubs for CPython 3.8 to 3.13.
            "$PYTHON" -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 13))' \
                || { echo "triton_env.sh needs Python 3.8 to 3.13 ($PYTHON is not)" >&2; exit 1; }
            "$PYTHON" -m venv "$VENV"
        fi
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet \
            "nvidia-pytriton==$PYTRITON_VERSION" "$ONNXRUNTIME_SPEC" "numpy<2"
        "$VENV/bin/python" -c "$CHECK"
        touch "$MARKER"
    fi
} >&2

echo "$(cd "$VENV" && pwd)/bin/python"
