#!/usr/bin/env python3
"""Catch-up benchmark: how long a replica takes to rejoin a loaded cluster.

Three `sealbatch run` replicas on loopback (configured by `sealbatch cluster
demo --dir`, then started again); `sealbatch loadgen` fills the leader's
journal to `--gb` gigabytes. Then, with the load still running:

  * lagging: a follower is killed for `--down` seconds and restarted; the
    time from its restart until it has applied what the leader had applied
    when it came back (the log entries it missed, or a snapshot of them);
  * wiped: a follower is removed (`sealbatch cluster remove`), its disk
    wiped, and it is added again (`sealbatch cluster add`, which returns once
    the learner has caught up): from an empty disk, through a snapshot (the
    newest checkpoint and the journal after it) and the log after it.

Every process shares the machine's cores. Not part of CI. Example:

    cargo build --release
    python3 scripts/catchup.py --gb 1

Prints the journal size and record count, and both times.
"""

import argparse
import os
import re
import socket
import shutil
import subprocess
import tempfile
import time

from replication import free_port


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def status(binary, config):
    """Each reachable member's (role, last log, applied), by id."""
    out = subprocess.run([binary, "cluster", "status", "--config", config],
                         capture_output=True, text=True).stdout
    members = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0].isdigit() and fields[1] != "unreachable:":
            num = lambda v: None if v == "-" else int(v)
            members[int(fields[0])] = (fields[1], num(fields[4]), num(fields[5]))
    return members


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/sealbatch")
    parser.add_argument("--gb", type=float, default=1.0, help="journal size to reach first")
    parser.add_argument("--rate", type=int, default=30000, help="orders/s while filling")
    parser.add_argument("--down", type=float, default=20, help="seconds the lagging one is down")
    parser.add_argument("--fill-max", type=float, default=1200,
                        help="seconds of load at most while filling")
    parser.add_argument("--keep", help="keep the cluster's directory here")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    work = args.keep or tempfile.mkdtemp(prefix="sealbatch-catchup-")
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
    subprocess.run([binary, "cluster", "demo", "--dir", work, "--duration", "2"],
                   capture_output=True, check=True)
    configs = {i: os.path.join(work, f"replica-{i}.toml") for i in (1, 2, 3)}
    dirs = {i: os.path.join(work, f"replica-{i}") for i in (1, 2, 3)}
    procs = {}

    def start(i):
        log = open(os.path.join(work, f"replica-{i}.log"), "a")
        procs[i] = subprocess.Popen([binary, "run", "--config", configs[i]],
                                    stdout=log, stderr=log)

    def stop(i, kill=False):
        if kill:
            procs[i].kill()
        else:
            procs[i].terminate()
        procs[i].wait(timeout=60)

    def leader():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for i in (1, 2, 3):
                if procs[i].poll() is None:
                    for member, (role, _, _) in status(binary, configs[i]).items():
                        if role == "leader":
                            return member
            time.sleep(0.3)
        raise RuntimeError("no leader")

    def load(lead, seconds):
        text = open(configs[lead]).read()
        port = int(re.search(r'^listen = "127\.0\.0\.1:(\d+)"', text, re.M).group(1))
        return subprocess.Popen(
            [binary, "loadgen", "--data-dir", dirs[lead], "--server", f"127.0.0.1:{port}",
             "--metrics", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}", "--rate", str(args.rate),
             "--traders", "8", "--duration", str(seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    for i in (1, 2, 3):
        start(i)
    try:
        lead = leader()
        target = args.gb * 1e9
        filled = time.monotonic()
        while du(os.path.join(dirs[lead], "journal")) < target:
            if time.monotonic() - filled > args.fill_max:
                print("the journal did not reach the size asked for in --fill-max seconds")
                break
            load(lead, 30).wait()
            lead = leader()
        journal = du(os.path.join(dirs[lead], "journal"))
        print(f"journal of the leader: {journal / 1e9:.2f} GB "
              f"after {time.monotonic() - filled:.0f} s of load", flush=True)
        # Replica 1 bootstrapped the cluster; a wiped replica must not.
        follower = next(i for i in (2, 3) if i != lead)

        # Lagging: down for a while under load, then restarted.
        loader = load(lead, args.down + 120)
        stop(follower, kill=True)
        time.sleep(args.down)
        start(follower)
        back = time.monotonic()
        goal = status(binary, configs[lead])[lead][2]
        while True:
            applied = status(binary, configs[lead]).get(follower, (None, None, None))[2]
            if applied is not None and applied >= goal:
                break
            if time.monotonic() - back > 600:
                raise RuntimeError("the lagging replica did not catch up in 10 minutes")
            time.sleep(0.1)
        lagging = time.monotonic() - back
        print(f"lagging replica ({args.down:.0f} s down at {args.rate:,} orders/s offered): "
              f"caught up {lagging:.1f} s after its restart", flush=True)

        # Wiped: removed, disk lost, added again.
        lead = leader()
        subprocess.run([binary, "cluster", "remove", "--id", str(follower),
                        "--config", configs[lead]], capture_output=True, check=True)
        stop(follower, kill=True)
        shutil.rmtree(os.path.join(dirs[follower], "raft"))
        shutil.rmtree(os.path.join(dirs[follower], "journal"))
        start(follower)
        text = open(configs[follower]).read()
        member = text.split("[[cluster.members]]")
        block = next(m for m in member[1:] if re.search(rf"^id = {follower}$", m, re.M))
        addr = re.search(r'^addr = "([^"]+)"', block, re.M).group(1)
        client = re.search(r'^client = "([^"]+)"', block, re.M).group(1)
        fingerprint = open(os.path.join(dirs[follower], "tls", "fingerprint")).read().strip()
        added = time.monotonic()
        subprocess.run([binary, "cluster", "add", "--id", str(follower), "--addr", addr,
                        "--client", client, "--fingerprint", fingerprint,
                        "--config", configs[lead]], capture_output=True, check=True)
        wiped = time.monotonic() - added
        rebuilt = du(os.path.join(dirs[follower], "journal"))
        print(f"wiped replica: added again and caught up in {wiped:.1f} s "
              f"(its journal, from the snapshot on: {rebuilt / 1e6:.0f} MB; "
              f"the leader's: {du(os.path.join(dirs[lead], 'journal')) / 1e9:.2f} GB)",
              flush=True)
        loader.terminate()
        loader.wait()
    finally:
        for i in procs:
            if procs[i].poll() is None:
                stop(i)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
