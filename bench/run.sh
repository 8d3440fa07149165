#!/usr/bin/env bash
# Runs every benchmark of BENCHMARKS.md and prints the report (also written as markdown).
#
#   bench/run.sh [--users N] [--sizes N,N,...] [--scratch DIR] [--repeats R] [--no-requests]
#
# Creates .venv/bench (pinned DuckDB), builds the release binaries once, generates the data
# (deterministic seed) into the scratch directory (default target/bench) and runs everything.
# Default size: 10,000 users (~2.9 M transactions, ~0.75 GB of NDJSON), a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

DUCKDB_VERSION=2.0.0
MOTO_VERSION=5.2.5
VENV=.venv/bench
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$DUCKDB_VERSION')" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "duckdb==$DUCKDB_VERSION"
fi
if [ ! -x "$VENV/bin/moto_server" ] && [ ! -x .venv/bin/moto_server ]; then
    "$VENV/bin/pip" install --quiet "moto[server]==$MOTO_VERSION"
fi

echo "building release binaries (segments, segments-bench, worker-low-balance)..." >&2
cargo build --release --quiet -p financial-segments -p segments-bench -p worker-low-balance

exec "$VENV/bin/python" bench/run.py "$@"
