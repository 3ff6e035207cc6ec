#!/usr/bin/env python3
"""Overload benchmark: the sustainable rate, then twice it, with admission control.

For each rate of `--rates`, a fresh `sealbatch run` (metrics on) gets
`sealbatch loadgen` at that rate for `--duration` seconds; the sequencer's
resident memory is sampled every second from /proc. Then the overload run:
`--overload` times the highest rate whose receipt p99 stayed within
`--p99-ms` (the sustainable rate), for `--overload-duration` seconds.

Not part of CI. Example (about 5 minutes):

    cargo build --release
    python3 scripts/overload.py --rates 60000,80000,100000,120000 --duration 20

Prints one row per run: offered and accepted orders/s, orders deferred by
`Busy` retry-afters, receipt p50/p99, close→result p50/p99, receipts proven
included, and the sequencer's memory at start, peak and end.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def number(pattern, text, group=1, cast=float):
    match = re.search(pattern, text)
    return cast(match.group(group)) if match else None


def run_once(binary, rate, duration, batch_ms, traders):
    work = tempfile.mkdtemp(prefix="sealbatch-overload-")
    data = os.path.join(work, "data")
    config = os.path.join(work, "sealbatch.toml")
    with open(config, "w") as f:
        f.write(f"batch_length_ms = {batch_ms}\n")
    port, metrics = free_port(), free_port(socket.SOCK_STREAM)
    server = subprocess.Popen(
        [binary, "run", "--config", config, "--data-dir", data,
         "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(os.path.join(data, "tls", "fingerprint")):
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError("the sequencer did not start")
        time.sleep(0.05)
    time.sleep(0.5)
    samples = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            value = rss_mib(server.pid)
            if value is not None:
                samples.append(value)
            done.wait(1.0)

    sampler = threading.Thread(target=sample)
    sampler.start()
    load = subprocess.run(
        [binary, "loadgen", "--data-dir", data, "--server", f"127.0.0.1:{port}",
         "--metrics", f"127.0.0.1:{metrics}", "--rate", str(rate),
         "--traders", str(traders), "--duration", str(duration)],
        capture_output=True, text=True)
    done.set()
    sampler.join()
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(work, ignore_errors=True)
    out = load.stdout
    return {
        "rate": rate,
        "accepted": number(r"\((\d+) orders/s", out),
        "deferred": number(r"orders deferred\s+(\d+)", out) or 0,
        "receipt_p50": number(r"receipt latency\s+p50\s+([\d.]+)", out),
        "receipt_p99": number(r"receipt latency.*?p99\s+([\d.]+)", out),
        "ctr_p50": number(r"close to result\s+p50\s+([\d.]+)", out),
        "ctr_p99": number(r"close to result.*?p99\s+([\d.]+)", out),
        "included": number(r"receipts included\s+(\d+) of (\d+)", out, 1, int),
        "receipts": number(r"receipts included\s+(\d+) of (\d+)", out, 2, int),
        "busy": number(r"rejected\s+(\d+)\s+busy", out, 1, int) or 0,
        "decrypt": number(r"decrypt ([\d.]+) ms", out),
        "cpu": number(r"sequencer ([\d.]+) cores", out),
        "rss": (samples[0] if samples else None, max(samples) if samples else None,
                samples[-1] if samples else None),
        "rss_series": samples,
        "raw": out + load.stderr[-2000:],
    }


def row(r):
    rss = r["rss"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    return (f"| {r['rate']:,} | {fmt(r['accepted'], ',.0f')} | {r['deferred']:,.0f} | {r['busy']:,} "
            f"| {fmt(r['receipt_p50'], '.1f')} / {fmt(r['receipt_p99'], '.1f')} ms "
            f"| {fmt(r['ctr_p50'], '.0f')} / {fmt(r['ctr_p99'], '.0f')} ms "
            f"| {r['included']} of {r['receipts']} "
            f"| {fmt(r['decrypt'], '.1f')} ms | {fmt(r['cpu'], '.2f')} "
            f"| {fmt(rss[0], '.0f')} / {fmt(rss[1], '.0f')} / {fmt(rss[2], '.0f')} MiB |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/sealbatch")
    parser.add_argument("--rates", default="60000,80000,100000,120000")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--overload", type=float, default=2.0)
    parser.add_argument("--overload-duration", type=float, default=60)
    parser.add_argument("--p99-ms", type=float, default=20)
    parser.add_argument("--batch-ms", type=int, default=100)
    parser.add_argument("--traders", type=int, default=8)
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    header = ("| offered orders/s | accepted orders/s | deferred (busy) | busy refusals "
              "| receipt p50 / p99 | close→result p50 / p99 | receipts included "
              "| decrypt per batch | sequencer cores | memory start / peak / end |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(header, flush=True)
    sustainable = None
    for rate in (int(r) for r in args.rates.split(",")):
        r = run_once(binary, rate, args.duration, args.batch_ms, args.traders)
        print(row(r), flush=True)
        if r["receipt_p99"] is not None and r["receipt_p99"] <= args.p99_ms and r["busy"] == 0:
            sustainable = rate
    if sustainable is None:
        print("no rate met the receipt p99 bound")
        return 1
    overload = int(sustainable * args.overload)
    print(f"\nsustainable: {sustainable:,} orders/s (receipt p99 <= {args.p99_ms} ms); "
          f"overload at {overload:,} for {args.overload_duration:.0f} s:", flush=True)
    print(header)
    r = run_once(binary, overload, args.overload_duration, args.batch_ms, args.traders)
    print(row(r))
    series = r["rss_series"][::10]
    print("sequencer memory every 10 s: " + ", ".join(f"{v:.0f}" for v in series) + " MiB")
    bound = 3 * args.batch_ms + (r["decrypt"] or 0)
    print(f"close→result p99 {r['ctr_p99']} ms against 3 batch lengths + one opening = {bound:.0f} ms; "
          f"accepted {r['accepted']:,.0f} against sustainable {sustainable:,} "
          f"({(r['accepted'] or 0) / sustainable * 100:.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
