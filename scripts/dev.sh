#!/usr/bin/env bash
# Set up Switchyard on a fresh machine, then serve or test.
#   ./scripts/dev.sh serve   build the demo and serve it on the embedded defaults
#   ./scripts/dev.sh test    lint, type-check and run the whole test suite (starts
#                            redis-server when none answers; installs Debian's redis-server
#                            and prometheus packages when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { echo "Switchyard needs Python >= 3.11 ($PYTHON is older)" >&2; exit 1; }
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[dev,ray]"
    "$VENV/bin/python" -m switchyard.demo.build_model  # into ~/.cache/switchyard/demo
}

redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
    else
        "$VENV/bin/python" -c 'import redis, sys; sys.exit(not redis.Redis(socket_timeout=1).ping())' \
            >/dev/null 2>&1
    fi
}

ensure_redis() {
    redis_answers && return 0
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "installing redis-server from Debian's packages"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --logfile "$(pwd)/.redis-test.log"
    for _ in $(seq 50); do redis_answers && return 0; sleep 0.1; done
    echo "redis-server did not start; see .redis-test.log" >&2
    exit 1
}

# tests/observability/ run promtool on the shipped rules and a real Prometheus against a
# real gateway: both binaries come with Debian's prometheus package.
ensure_prometheus() {
    command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && return 0
    echo "installing prometheus (and promtool) from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    # Where systemd runs, the package also starts its own service on :9090; the tests run
    # Prometheus of their own on free ports.
    command -v promtool >/dev/null 2>&1 || { echo "promtool is still missing" >&2; exit 1; }
}

case "${1:-}" in
    serve)
        setup
        shift
        exec "$VENV/bin/switchyard" serve "$@"
        ;;
    test)
        setup
        ensure_redis
        ensure_prometheus
        shift
        "$VENV/bin/python" -m switchyard.protos.generate --check
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/python" scripts/typecheck.py  # mypy --strict (settings: pyproject.toml)
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: $0 serve [--config FILE] | test [pytest args]" >&2
        exit 2
        ;;
esac
