#!/usr/bin/env bash
# The fault campaign: three replicas under load, and seeded faults of every
# kind — SIGKILL of the leader, of a follower, of two at once, of all three
# (then restarted); SIGSTOP/SIGCONT of the leader and of a follower for
# 0.3–3 s; a graceful stop of the leader — once without a committee and once
# with five keypers (docs/operating.md, "A fault campaign"). Not run by CI:
# it takes twice the duration plus a few minutes, on a quiet machine.
#
#   scripts/fault-campaign.sh [SECONDS [FAULTS [SEED]]]   # default 600 60 1
#
# Each run prints, per fault kind, the time from a fault to the next receipt;
# the replicas that stopped themselves; elections not within 3 s of a fault;
# every receipt checked against every replica's journal (lost, forged); with
# the committee every keyper release checked against the committed seals and
# the batch clock (for another seal, before its batch closed, batches with
# two seals). A run with a broken promise exits non-zero.
#
# Environment: CARGO_TARGET_DIR (where the release build is), CAMPAIGN_RATE
# (orders/s offered, default 4000), CAMPAIGN_OUT (where each run's output and
# replica logs are kept; default a new directory under /tmp).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" == -* ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
seconds="${1:-600}"
faults="${2:-60}"
seed="${3:-1}"
rate="${CAMPAIGN_RATE:-4000}"

(cd "$repo" && cargo build --release --quiet)
bin="${CARGO_TARGET_DIR:-$repo/target}/release/sealbatch"
[[ -x "$bin" ]] || { echo "no binary at $bin" >&2; exit 1; }
out="${CAMPAIGN_OUT:-$(mktemp -d /tmp/sealbatch-campaign-XXXXXX)}"
mkdir -p "$out"

current=""
cleanup() {
    if [[ -n "$current" ]] && kill -0 "$current" 2>/dev/null; then
        kill -TERM -- "-$current" 2>/dev/null || kill -TERM "$current" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$current" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failed=0
for keypers in 0 5; do
    dir="$out/keypers-$keypers"
    mkdir -p "$dir"
    echo "== $faults faults in $seconds s at $rate orders/s, seed $seed, keypers: $keypers"
    set +e
    timeout --kill-after=10 "$((seconds + 300))" "$bin" cluster demo --dir "$dir" \
        --duration "$seconds" --rate "$rate" --faults "$faults" --seed "$seed" \
        --keypers "$keypers" >"$dir/demo.out" 2>"$dir/demo.err" &
    current=$!
    wait "$current"
    status=$?
    current=""
    set -e
    rm -rf "$dir"/replica-1 "$dir"/replica-2 "$dir"/replica-3
    grep -E '^(kill|pause|stop)-[a-z]+: |^replicas that stopped|^elections from|^receipts: |^keyper releases|^orders offered|^campaign: |^verify: |^the journals gathered' \
        "$dir/demo.out" || true
    tail -n 3 "$dir/demo.err" | sed 's/^/stderr: /'
    echo "exit status $status"
    [[ $status == 0 ]] || failed=1
done
echo "each run's output and replica logs: $out"
exit "$failed"
