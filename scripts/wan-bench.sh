#!/usr/bin/env bash
# Three replicas across a simulated WAN: `sealbatch cluster demo` with a
# relay in front of each replica's transport (docs/operating.md, "Replicas
# across a simulated WAN"), over a grid of links, steady and with the leader
# killed, with the default [cluster] settings and (if given) with others.
# One table row per run.
#
#   scripts/wan-bench.sh                       # the grid, default settings
#   scripts/wan-bench.sh 'heartbeat_ms = 100
#   election_timeout_ms = [1000, 2000]'        # the grid twice: default, then these
#   scripts/wan-bench.sh --smoke [SETTINGS]    # one short row: 10 ± 5 ms, 10 s, no kill
#
# Links (one-way delay ± jitter, loss, each way between replicas): 0 ± 0,
# 10 ± 5, 40 ± 5, 40 ± 5 with 1 % loss. Each at --rate (default 10000)
# orders/s for 20 s without a kill, then 40 s with 5 kills. Clients reach
# the replicas directly. The grid takes about 8 minutes per settings: run it
# on a quiet machine (the replicas, relays and traders share its cores).
#
# Columns: the link; the settings; kills; orders offered per second; the
# share accepted (receipted); receipt p50 and p99 (submission to receipt);
# elections not within 3 s of a kill; failover (kill to the first receipt
# from the new leader) p50 and max; whether every kill was followed by a
# receipt from the new leader within 15 s; the demo's exit status.
#
# Environment: CARGO_TARGET_DIR (where the release build is), WAN_RATE
# (orders/s offered, default 10000), WAN_DEFAULTS=0 (only the settings
# given, not the defaults first), WAN_LINKS (other links, e.g. "40 5 0;40 5 1"),
# WAN_OUT (where each run's output and
# replica logs are kept; default a new directory under /tmp).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=1
    shift
fi
if [[ $# -gt 1 || "${1:-}" == -* ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
custom="${1:-}"
rate="${WAN_RATE:-10000}"
# Beyond its trading time a run starts three replicas and waits for a
# leader (at most 30 s), lets in-flight submissions finish (at most ~11 s),
# stops the replicas and verifies their journals.
margin=120

(cd "$repo" && cargo build --release --quiet)
bin="${CARGO_TARGET_DIR:-$repo/target}/release/sealbatch"
[[ -x "$bin" ]] || { echo "no binary at $bin" >&2; exit 1; }

out="${WAN_OUT:-$(mktemp -d /tmp/sealbatch-wan-XXXXXX)}"
mkdir -p "$out"
current=""
cleanup() {
    # `timeout` leads its own process group (the demo and its replicas):
    # the group of the run in progress, by its id.
    if [[ -n "$current" ]] && kill -0 "$current" 2>/dev/null; then
        kill -TERM -- "-$current" 2>/dev/null || kill -TERM "$current" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$current" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

links=("0 0 0" "10 5 0" "40 5 0" "40 5 1")
# WAN_LINKS="40 5 0;40 5 1": other links (delay jitter loss; ...).
if [[ -n "${WAN_LINKS:-}" ]]; then
    IFS=';' read -r -a links <<<"$WAN_LINKS"
fi
faults=("0 20" "5 40")
if [[ $smoke == 1 ]]; then
    links=("10 5 0")
    faults=("0 10")
fi
settings=("")
if [[ -n "$custom" ]]; then
    settings=("" "$custom")
    # WAN_DEFAULTS=0: the given settings only.
    if [[ "${WAN_DEFAULTS:-1}" == 0 ]]; then
        settings=("$custom")
    fi
fi

# The value of KEY= in the run's summary line.
value() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$summary"; }

printf '%-6s %-6s %-5s %-34s %-5s %-9s %-9s %-8s %-8s %-12s %-12s %-12s %-7s %s\n' \
    delay jitter loss settings kills offered/s accepted% p50_ms p99_ms elect_nokill failover_p50 failover_max served exit
run=0
for setting in "${settings[@]}"; do
    for link in "${links[@]}"; do
        read -r delay jitter loss <<<"$link"
        for fault in "${faults[@]}"; do
            read -r kills duration <<<"$fault"
            run=$((run + 1))
            dir="$out/run-$run"
            mkdir -p "$dir"
            args=(cluster demo --dir "$dir" --rate "$rate" --duration "$duration" --kills "$kills"
                --delay-ms "$delay" --jitter-ms "$jitter" --loss "$loss")
            if [[ -n "$setting" ]]; then
                args+=(--cluster-config "$setting")
            fi
            set +e
            timeout --kill-after=10 "$((duration + margin))" "$bin" "${args[@]}" \
                >"$dir/demo.out" 2>"$dir/demo.err" &
            current=$!
            wait "$current"
            status=$?
            current=""
            set -e
            # Keep the output and the replicas' logs, not the journals.
            rm -rf "$dir"/replica-1 "$dir"/replica-2 "$dir"/replica-3 "$dir"/keypers
            summary="$(sed -n 's/^summary: //p' "$dir/demo.out" | tail -n 1)"
            label="${setting:-default}"
            label="${label//$'\n'/; }"
            if [[ -z "$summary" ]]; then
                printf '%-6s %-6s %-5s %-34.34s %-5s %-9s %-9s %-8s %-8s %-12s %-12s %-12s %-7s %s\n' \
                    "$delay" "$jitter" "$loss" "$label" "$kills" - - - - - - - - "$status (no summary: $dir)"
                continue
            fi
            served="$(value failovers_served)"
            if [[ "$served" == 0/0 ]]; then
                served=-
            elif [[ "${served%/*}" == "${served#*/}" ]]; then
                served=yes
            else
                served="no($served)"
            fi
            printf '%-6s %-6s %-5s %-34.34s %-5s %-9s %-9s %-8s %-8s %-12s %-12s %-12s %-7s %s\n' \
                "$delay" "$jitter" "$loss" "$label" "$kills" \
                "$(value offered_per_s)" "$(value accepted_pct)" \
                "$(value receipt_p50_ms)" "$(value receipt_p99_ms)" \
                "$(value elections_without_kill)" \
                "$(value failover_p50_ms)" "$(value failover_max_ms)" "$served" "$status"
        done
    done
done
echo "each run's output and replica logs: $out"
