#!/usr/bin/env python3
"""Replication benchmark: a 3-replica cluster against one node, on one machine.

For each rate of `--rates`, `sealbatch loadgen` (8 traders, bundles of 16,
100 ms batches) runs for `--duration` seconds against (a) a fresh single
`sealbatch run` and (b) the leader of a fresh cluster of three `sealbatch run`
replicas on loopback (made by `sealbatch cluster demo --dir`, then restarted).
Every process shares the machine's cores: the replicas, the single node and
the traders.

Not part of CI. Example (about 4 minutes):

    cargo build --release
    python3 scripts/replication.py --rates 20000,40000,60000,80000 --duration 10

`--entries-in-flight N` sets the replicas' `[cluster] entries_in_flight`
(default: the configuration's default, 1); `--only cluster` skips the
single node.

Prints one row per run: setup, offered and accepted orders/s, receipt p50/p99,
close→result p50/p99, receipts proven included.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def number(pattern, text, group=1, cast=float):
    match = re.search(pattern, text)
    return cast(match.group(group)) if match else None


def loadgen(binary, data, port, rate, duration, traders):
    out = subprocess.run(
        [binary, "loadgen", "--data-dir", data, "--server", f"127.0.0.1:{port}",
         "--metrics", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}", "--rate", str(rate),
         "--traders", str(traders), "--duration", str(duration)],
        capture_output=True, text=True).stdout
    return {
        "accepted": number(r"\((\d+) orders/s", out),
        "receipt_p50": number(r"receipt latency\s+p50\s+([\d.]+)", out),
        "receipt_p99": number(r"receipt latency.*?p99\s+([\d.]+)", out),
        "ctr_p50": number(r"close to result\s+p50\s+([\d.]+)", out),
        "ctr_p99": number(r"close to result.*?p99\s+([\d.]+)", out),
        "included": number(r"receipts included\s+(\d+) of (\d+)", out, 1, int),
        "receipts": number(r"receipts included\s+(\d+) of (\d+)", out, 2, int),
        "raw": out,
    }


def wait_for(path, process, seconds=20):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.05)


def single(binary, rate, duration, traders):
    work = tempfile.mkdtemp(prefix="sealbatch-single-")
    data = os.path.join(work, "data")
    port = free_port()
    server = subprocess.Popen(
        [binary, "run", "--data-dir", data, "--listen", f"127.0.0.1:{port}", "--no-metrics"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(os.path.join(data, "tls", "fingerprint"), server)
        time.sleep(0.5)
        return loadgen(binary, data, port, rate, duration, traders)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def cluster(binary, rate, duration, traders, entries_in_flight=None):
    work = tempfile.mkdtemp(prefix="sealbatch-replicas-")
    # The demo makes the replicas' keys, certificates and configurations
    # (and a cluster with a short history); they are then started again.
    subprocess.run([binary, "cluster", "demo", "--dir", work, "--duration", "2"],
                   capture_output=True, check=True)
    configs = [os.path.join(work, f"replica-{i}.toml") for i in (1, 2, 3)]
    if entries_in_flight is not None:
        for path in configs:
            text = open(path).read()
            if "\n[cluster]\n" not in text:
                raise RuntimeError(f"{path} has no [cluster] section")
            text = text.replace("\n[cluster]\n",
                                f"\n[cluster]\nentries_in_flight = {entries_in_flight}\n", 1)
            open(path, "w").write(text)
    replicas = [subprocess.Popen([binary, "run", "--config", c],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for c in configs]
    try:
        leader = None
        deadline = time.monotonic() + 30
        while leader is None and time.monotonic() < deadline:
            time.sleep(0.3)
            status = subprocess.run([binary, "cluster", "status", "--config", configs[0]],
                                    capture_output=True, text=True).stdout
            for line in status.splitlines():
                fields = line.split()
                if len(fields) > 1 and fields[1] == "leader":
                    leader = int(fields[0])
        if leader is None:
            raise RuntimeError("no leader")
        text = open(configs[leader - 1]).read()
        port = int(re.search(r'^listen = "127\.0\.0\.1:(\d+)"', text, re.M).group(1))
        data = os.path.join(work, f"replica-{leader}")
        return loadgen(binary, data, port, rate, duration, traders)
    finally:
        for r in replicas:
            r.terminate()
        for r in replicas:
            r.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def row(setup, rate, r):
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    return (f"| {setup} | {rate:,} | {fmt(r['accepted'], ',.0f')} "
            f"| {fmt(r['receipt_p50'], '.1f')} / {fmt(r['receipt_p99'], '.1f')} ms "
            f"| {fmt(r['ctr_p50'], '.0f')} / {fmt(r['ctr_p99'], '.0f')} ms "
            f"| {r['included']} of {r['receipts']} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/sealbatch")
    parser.add_argument("--rates", default="20000,40000,60000,80000")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--traders", type=int, default=8)
    parser.add_argument("--entries-in-flight", type=int)
    parser.add_argument("--only", choices=["single", "cluster"])
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    print("| setup | offered orders/s | accepted orders/s | receipt p50 / p99 "
          "| close→result p50 / p99 | receipts included |")
    print("|---|---:|---:|---:|---:|---:|")
    for rate in [int(r) for r in args.rates.split(",")]:
        setups = (("one node", lambda: single(binary, rate, args.duration, args.traders)),
                  ("3 replicas", lambda: cluster(binary, rate, args.duration, args.traders,
                                                 args.entries_in_flight)))
        for setup, run in setups:
            if args.only and (args.only == "single") != (setup == "one node"):
                continue
            r = run()
            print(row(setup, rate, r), flush=True)
            if r["accepted"] is None:
                print(r["raw"][-1500:])


if __name__ == "__main__":
    main()
