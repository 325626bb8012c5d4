#!/usr/bin/env bash
# Runs Sluice's benchmarks: the load harness (direct vs Sluice vs nginx), then the criterion
# hot-path benches. Arguments go to the load harness (e.g. `--quick` for a smoke run).
#
#   bash bench/run.sh            # full run: ~3.5 min on 2 cores once built (cold build: +7-8 min)
#   bash bench/run.sh --quick    # smoke run of the load harness
#
# The load report is printed and written to bench/out/latest.md; criterion keeps its own
# results under target/criterion/.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building release binaries (sluice, sluice-mock)" >&2
cargo build --release --bins

if ! command -v nginx >/dev/null 2>&1; then
    echo "== nginx not found: trying apt-get (the nginx arm is skipped if this fails)" >&2
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
        { $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive \
            $SUDO apt-get install -y --no-install-recommends nginx; } >&2 \
            || echo "== nginx install failed; continuing without it" >&2
    fi
fi

# 1,000 concurrent streams need ~2,000 sockets in Sluice and as many in the load generator.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== open files limit: $(ulimit -n)" >&2

echo "== load harness" >&2
cargo bench --bench load -- "$@"

echo "== hot paths (criterion)" >&2
cargo bench --bench hot_paths
