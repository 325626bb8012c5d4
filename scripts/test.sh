#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine (root; network to crates.io, PyPI and
# Debian's archive only):
#
#   bash scripts/test.sh
#
# Stages: rustfmt check, clippy (warnings are errors), build the binaries, Rust tests
# (nextest when installed, else cargo test), each over the whole workspace (the proxy and
# the mock provider crate in mock/), then the end-to-end tests that drive the
# official OpenAI and Anthropic Python SDKs through target/debug/sluice in front of
# target/debug/sluice-mock (tests/sdk, in .venv).
#
# Every stage runs even when an earlier one failed (except the SDK tests, which need the
# binaries), so one run reports every problem; the exit status is non-zero if any failed.
set -euo pipefail

# Everything lives in functions and runs from the last line, so bash has parsed the whole
# file before it starts: editing this script while it runs cannot derail the run.

banner() {
    printf '\n==== %s (%ss) ====\n' "$1" "$(($(date +%s) - START))"
}

# run_stage NAME CMD...: runs CMD, records NAME as failed when it exits non-zero.
run_stage() {
    local name=$1
    shift
    banner "$name"
    local rc=0
    "$@" || rc=$?
    if ((rc != 0)); then
        echo "---- $name FAILED (exit $rc)"
        FAILED+=("$name")
    fi
    return "$rc"
}

# --- system packages --------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    if ((APT_UPDATED == 0)); then
        echo "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    echo "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# need_pkg BINARY [PACKAGE]: installs the Debian PACKAGE (default: BINARY) when BINARY is
# not on PATH.
need_pkg() {
    local binary=$1 package=${2:-$1}
    if ! command -v "$binary" >/dev/null 2>&1; then
        apt_install "$package"
    fi
}

system_packages() {
    banner "system packages"
    # The machine's CPython has venv and ensurepip; Debian's own python3 ships them apart.
    need_pkg python3
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    # The fleet tests (tests/fleet.rs, tests/redis_fixture.rs) start private redis-server
    # instances on free loopback ports; nothing else on the machine is touched.
    need_pkg redis-server
    # The semantic cache's HNSW graph (the usearch crate) is C++, built by cc through cxx.
    need_pkg g++
    # promtool validates deploy/prometheus/sluice-alerts.yml in tests/deploy_assets.rs
    # (which skips that check, saying so, without it); Debian ships it in `prometheus`.
    # Optional: a missing promtool never fails this stage.
    if ! command -v promtool >/dev/null 2>&1; then
        if ((EUID == 0)); then
            apt_install prometheus || echo "promtool not installed: its check will be skipped"
        else
            echo "promtool missing and not root: its check will be skipped"
        fi
    fi
    echo "ok"
}

# --- Python environment for the SDK tests -----------------------------------------------

python_env() {
    banner "python venv (.venv)"
    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt
    .venv/bin/python -m pip freeze --disable-pip-version-check \
        | grep -iE '^(openai|anthropic|pytest)==' || true
}

# --- End-to-end: official SDKs through the real binaries --------------------------------

sdk_tests() {
    SLUICE_BIN="$ROOT/target/debug/sluice" \
        SLUICE_MOCK_BIN="$ROOT/target/debug/sluice-mock" \
        timeout 900 .venv/bin/python -m pytest tests/sdk -q -rxXfE -p no:cacheprovider
}

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    ROOT=$(pwd)
    START=$(date +%s)
    FAILED=()
    export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
    # A fresh clone (CI) gains nothing from incremental caches, which would double the
    # footprint of target/ on disk.
    if [[ -n ${CI:-} ]]; then
        export CARGO_INCREMENTAL=0
    fi

    system_packages
    python_env

    local fmt_color=()
    [[ -t 1 ]] || fmt_color=(--color=never) # rustfmt colours its diff even into a log file
    run_stage "cargo fmt --check" cargo fmt --all -- --check "${fmt_color[@]}" || true
    run_stage "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings || true
    run_stage "module dependencies (no cycles)" python3 scripts/module-deps.py || true

    local build_ok=1
    run_stage "cargo build --bins" cargo build --workspace --bins || build_ok=0

    if command -v cargo-nextest >/dev/null 2>&1; then
        run_stage "rust tests (nextest)" cargo nextest run --workspace --no-fail-fast || true
    else
        run_stage "rust tests (cargo test)" cargo test --workspace --no-fail-fast || true
    fi

    if ((build_ok)); then
        run_stage "SDK end-to-end tests (pytest tests/sdk)" sdk_tests || true
    else
        banner "SDK end-to-end tests (pytest tests/sdk)"
        echo "---- skipped: the binaries did not build"
        FAILED+=("SDK end-to-end tests (not run: build failed)")
    fi

    banner "summary"
    # The build's footprint: CI runs on a machine with limited free disk.
    du -sh target 2>/dev/null || true
    if ((${#FAILED[@]})); then
        printf 'FAILED: %s\n' "${FAILED[@]}"
        exit 1
    fi
    echo "all stages passed"
}

main "$@"
exit $?
