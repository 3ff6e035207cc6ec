#!/usr/bin/env python3
"""Crash campaign: SIGKILL the real sequencer at random moments under load.

Each round starts `sealbatch run` on one data directory, puts `sealbatch
loadgen` on it (every receipt appended to one file as it arrives), and kills
the sequencer with SIGKILL at a random moment, then the load generator. After
the last round the sequencer is started once more to seal and clear what the
journal holds, stopped with SIGTERM (it must exit 0), and `sealbatch verify
--receipts` holds the journal to every receipt ever given: each must be in
its batch's journaled outcome, and every batch must re-derive.

Not part of CI (a full campaign takes about a quarter of an hour):

    cargo build --release
    python3 scripts/crash_campaign.py --rounds 200

Reports acknowledged envelopes lost (must be 0), batches verified, and the
restart times (spawn to listening, and the journal replay it logs).
"""

import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

LISTENING = re.compile(r"sequencer listening")
REPLAYED = re.compile(r"journal replayed.*?ms\S*?=\S*?(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


def start(binary, data, config, port, log):
    """Starts the sequencer; returns (process, seconds to listening, replay ms)."""
    started = time.monotonic()
    process = subprocess.Popen(
        [binary, "run", "--config", config, "--data-dir", data,
         "--listen", f"127.0.0.1:{port}", "--no-metrics"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    replay_ms = None
    deadline = started + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise RuntimeError(f"the sequencer exited with {process.wait()} before listening")
        line = ANSI.sub("", line)
        log.write(line)
        match = REPLAYED.search(line)
        if match:
            replay_ms = int(match.group(1))
        if LISTENING.search(line):
            ready = time.monotonic() - started
            # Keep draining its log so that it never blocks on a full pipe.
            subprocess.Popen(["cat"], stdin=process.stderr, stdout=log)
            return process, ready, replay_ms
    process.kill()
    raise RuntimeError("the sequencer did not listen within 60 s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--binary", default="target/release/sealbatch")
    parser.add_argument("--rate", type=int, default=20_000, help="loadgen orders/s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    binary = os.path.abspath(args.binary)
    work = tempfile.mkdtemp(prefix="sealbatch-crash-campaign-")
    data = os.path.join(work, "data")
    receipts = os.path.join(work, "receipts")
    config = os.path.join(work, "sealbatch.toml")
    with open(config, "w") as f:
        # Checkpoints every 20 batches: restarts start from one most times.
        f.write("checkpoint_every_batches = 20\n")
    port = free_port()
    log = open(os.path.join(work, "sequencer.log"), "w")
    ready_s, replay_ms = [], []
    print(f"campaign in {work}: {args.rounds} rounds, loadgen at {args.rate} orders/s")
    for round_ in range(args.rounds):
        process, ready, replayed = start(binary, data, config, port, log)
        if round_ > 0:
            ready_s.append(ready)
            if replayed is not None:
                replay_ms.append(replayed)
        load_s = rng.uniform(1.0, 4.0)
        loadgen = subprocess.Popen(
            [binary, "loadgen", "--data-dir", data, "--server", f"127.0.0.1:{port}",
             "--rate", str(args.rate), "--traders", "4", "--duration", f"{load_s:.2f}",
             "--receipts", receipts],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, load_s + 0.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        # The traders would only learn of the dead server at their idle
        # timeout; every receipt they got is already in the file (written as
        # it arrives), so stop them now.
        loadgen.kill()
        loadgen.wait()
        given = sum(1 for _ in open(receipts)) if os.path.exists(receipts) else 0
        print(f"round {round_ + 1:>3}: killed after {ready:.2f} s to listen "
              f"(replay {replayed} ms), {given} receipts so far", flush=True)

    # Recovery seals and clears what the journal holds; SIGTERM exits 0.
    process, ready, replayed = start(binary, data, config, port, log)
    ready_s.append(ready)
    if replayed is not None:
        replay_ms.append(replayed)
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    if code != 0:
        print(f"graceful shutdown exited {code}")
        return 1
    verify = subprocess.run(
        [binary, "verify", "--data-dir", data, "--receipts", receipts],
        capture_output=True, text=True)
    print(verify.stdout.strip().splitlines()[-2] if verify.stdout else "")
    print(verify.stdout.strip().splitlines()[-1] if verify.stdout else "")
    print(f"restarts: {len(ready_s)}; spawn to listening p50 {percentile(ready_s, 0.5) * 1e3:.0f} ms, "
          f"p99 {percentile(ready_s, 0.99) * 1e3:.0f} ms; journal replay p50 "
          f"{percentile(replay_ms, 0.5):.0f} ms, p99 {percentile(replay_ms, 0.99):.0f} ms")
    if verify.returncode != 0:
        print(verify.stderr)
        print(f"FAILED: data kept in {work}")
        return 1
    if not args.keep:
        shutil.rmtree(work)
    print("OK: no acknowledged envelope lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
