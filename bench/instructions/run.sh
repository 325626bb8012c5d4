#!/bin/bash
# User-space instructions per request (valgrind's callgrind), deterministic
# where wall-clock CPU on a shared 2-core VM is not. Sluice runs under
# callgrind with instrumentation off; after a 50-request warm-up it is turned
# on (callgrind_control) for 3,000 requests on one keep-alive connection and
# off again, so start-up (its clock calibration varies run to run) and
# shutdown are not counted. Kernel time (socket I/O, fsync) is not counted:
# compare binaries with it, and confirm with the timed load harness or perf.
#
#   bash bench/instructions/run.sh [SLUICE_BINARY]    (default target/release/sluice)
#
# Needs valgrind, python3 and target/release/sluice-mock. Ports 18480-18491
# and 18081 on 127.0.0.1. About 20 s per configuration.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/release/sluice}
mock=$root/target/release/sluice-mock
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$mock" --listen 127.0.0.1:18081 >/dev/null 2>&1 &
export SLUICE_IR_UPSTREAM_KEY=sk-upstream
sed "s#@STATE@#$tmp/state.jsonl#; s#@SHA@#$(printf 'sk-test' | sha256sum | cut -d' ' -f1)#" \
    "$here/limits.toml" > "$tmp/limits.toml"

total() { # config port requests mode
    # Instrumentation starts off: start-up, the warm-up and shutdown are not
    # counted, only the requests (and whatever runs beside them meanwhile).
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg.out" \
        "$bin" --config "$1" >"$tmp/cg.log" 2>&1 &
    local vg=$!
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:18490/healthz" && break
        sleep 0.3
    done
    python3 "$here/drive.py" "$2" 50 "$4"
    callgrind_control -i on "$vg" >/dev/null 2>&1
    python3 "$here/drive.py" "$2" "$3" "$4"
    callgrind_control -i off "$vg" >/dev/null 2>&1
    kill -INT $vg
    wait $vg || true
    # (`summary:` counts from the start, 0 here; `totals:` what was collected.)
    grep -m1 '^totals:' "$tmp/cg.out" | awk '{print $2}'
}

mkdir -p "$root/bench/out"
measure() { # label slug config port mode
    local n=3000 t
    t=$(total "$3" "$4" "$n" "$5")
    # The profile of those requests, for callgrind_annotate.
    cp "$tmp/cg.out" "$root/bench/out/callgrind-$2.out"
    echo "$1: $(( t / n )) instructions/request"
}

measure "plain (non-streaming)" plain "$here/plain.toml" 18480 json
measure "plain (streamed, 20 words)" stream "$here/plain.toml" 18480 stream
measure "limits+budget (non-streaming)" limits "$tmp/limits.toml" 18481 json
