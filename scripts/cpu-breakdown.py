#!/usr/bin/env python3
"""Where the sequencer's CPU goes, per envelope, by stage.

Starts `sealbatch run` (a fresh data directory, loopback, port 0) and
`sealbatch loadgen` against it at a fixed rate; after a warm-up, samples the
sequencer process with `perf record --call-graph dwarf` for a window, and
reads its CPU time from /proc over the same window. Each sample is given to
the stage of the outermost sealbatch function on its stack that names one
(opening a batch, signing a receipt or seal, clearing, ...), and an opening
sample to its primitive by the innermost frame (the variable-base
multiplication, the AEAD, the signature checks, point decoding). CPU per
envelope = the window's CPU time / the envelopes receipted in it.

    python3 scripts/cpu-breakdown.py [--rate 80000] [--window 6] [--side sequencer|traders]
                                     [--bin target/release/sealbatch]

With `--side traders` the loadgen process is sampled instead: sealing (split
by primitive), the receipt, seal and proof checks, QUIC.

Needs `perf` (Debian: linux-perf) and a release build. Prints a Markdown
table. Loopback only; every process it starts it stops.
"""

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

# The frames that name a stage, in precedence order: a sample goes to the
# first stage any frame of its stack names (the runtime's frames are on
# every stack, so they come last).
STAGES = [
    ("opening (s_e·R, AEAD, signature checks)", ("open_shaped_batch", "open_batch", "open_sorted", "decrypt_run", "OpenJob", "open_job")),
    ("receipt and seal signatures", ("SigningKey as signature::signer", "try_multipart_sign", "sign_seal", "sign_receipt", "Receipt::sign", "ed25519_dalek::signing")),
    ("clearing", ("sealbatch::clearing::",)),
    ("settlement", ("apply_outcome", "Ledger>::settle", "ledger::Ledger::settle")),
    ("Merkle tree and proofs", ("MerkleTree", "merkle::")),
    ("shape check and admission", ("check_shape", "ShapedEnvelope", "admission::", "header_batch")),
    ("journal write and fsync", ("journal::writer", "JournalWriter", "write_loop", "ext4_", "fsync", "blk_", "jbd2")),
    ("publishing results", ("publish::", "driver::publish", "BatchCleared", "wire::frame::encode", "encode_fields")),
    ("QUIC, TLS and UDP", ("quinn", "rustls", "ring::", "udp_", "__sys_sendmsg", "__sys_recvmsg", "sendmmsg", "recvmmsg", "ip_", "udp")),
    ("runtime, channels, wake-ups", ("tokio::", "crossbeam", "futex", "schedule", "std::thread", "parking_lot", "rayon")),
]

# The primitive of an opening sample: the first whose name any frame of its
# stack holds (the signature checks' multi-scalar multiplication runs the
# same curve code as `s_e·R`, so they are looked for first).
PRIMITIVES = [
    ("signature checks", ("cofactored", "verify", "multiscalar", "straus", "pippenger", "sha2::sha512")),
    ("variable-base multiplication s_e·R", ("variable_base",)),
    ("AEAD (ChaCha20-Poly1305)", ("chacha20", "poly1305")),
    ("point decoding and encoding", ("decompress", "compress", "pow2k", "invert", "sqrt_ratio", "FieldElement51")),
    ("hashing (BLAKE3)", ("blake3",)),
]


def classify(frames):
    """frames: symbol names, innermost first."""
    stage = None
    for name, keys in STAGES:
        if any(k in frame for frame in frames for k in keys):
            stage = name
            break
    if stage is None:
        leaf = frames[0] if frames else ""
        if "[k]" in leaf or leaf.startswith("0x"):
            return "kernel, other"
        return "other"
    if stage.startswith("opening"):
        for name, keys in PRIMITIVES:
            if any(k in frame for frame in frames for k in keys):
                return "opening: " + name
        return "opening: other"
    return stage


# The traders' side (the `loadgen` process).
CLIENT_STAGES = [
    ("sealing", ("seal_bundle", "seal_to", "seal_with_scalar", "bundle::encrypt")),
    ("receipt, seal and proof checks", ("Receipt>::verify", "receipt::", "InclusionProof", "SignedSeal", "verify_strict", "into_inclusion", "Trader>::event")),
    ("orders drawn", ("random_orders",)),
    ("QUIC, TLS and UDP", ("quinn", "rustls", "ring::", "udp_", "__sys_sendmsg", "__sys_recvmsg", "sendmmsg", "recvmmsg", "ip_", "udp")),
    ("runtime, channels, wake-ups", ("tokio::", "crossbeam", "futex", "schedule", "std::thread", "parking_lot", "rayon")),
]

# The primitive of a sealing sample, as PRIMITIVES for opening: the
# bundle's signature first (its fixed-base multiplication runs the same
# table code as the ephemeral key's).
SEALING = [
    ("the bundle's signature", ("SigningKey", "signing::", "sha2::sha512")),
    ("r·S_e (variable base)", ("variable_base",)),
    ("R = r·B (fixed base)", ("mul_base", "BasepointTable", "LookupTable", "AffineNiels")),
    ("AEAD (ChaCha20-Poly1305)", ("chacha20", "poly1305")),
    ("point encoding", ("compress", "pow2k", "invert", "FieldElement51")),
    ("hashing (BLAKE3)", ("blake3",)),
]


def classify_client(frames):
    """A sample of the traders' process: its stage, a sealing one split by
    primitive."""
    for name, keys in CLIENT_STAGES:
        if any(k in frame for frame in frames for k in keys):
            if name == "sealing":
                for part, parts in SEALING:
                    if any(k in frame for frame in frames for k in parts):
                        return "sealing: " + part
                return "sealing: other"
            return name
    leaf = frames[0] if frames else ""
    if "[k]" in leaf or leaf.startswith("0x"):
        return "kernel, other"
    return "other"


def short(symbol):
    """A symbol without its generic arguments and crate paths, to a width."""
    symbol = re.sub(r"<[^<>]*>", "", re.sub(r"<[^<>]*>", "", symbol))
    symbol = symbol.split("::")[-2:] if "::" in symbol else [symbol]
    return "::".join(symbol)[:48]


def read_samples(script_text):
    samples = []
    frames = []
    for line in script_text.splitlines():
        if not line.strip():
            if frames:
                samples.append(frames)
            frames = []
            continue
        if line[0] in " \t":
            m = re.match(r"\s+[0-9a-f]+\s+(.*?)(\s+\((.*)\))?$", line)
            if m:
                sym = m.group(1)
                if m.group(3) and "kernel" in m.group(3):
                    sym = "[k] " + sym
                frames.append(sym)
    if frames:
        samples.append(frames)
    return samples


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/sealbatch")
    ap.add_argument("--rate", type=int, default=80000)
    ap.add_argument("--bundle", type=int, default=16)
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--frequency", type=int, default=299)
    ap.add_argument("--side", choices=["sequencer", "traders"], default="sequencer",
                    help="sample the sequencer, or the loadgen process (the traders: sealing, checks)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sealbatch-cpu-")
    data = os.path.join(work, "node")
    node = subprocess.Popen(
        [args.bin, "run", "--data-dir", data, "--listen", "127.0.0.1:0", "--no-metrics"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "node.log"), "w"))
    loadgen = None
    try:
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(data, "address")):
            if time.time() > deadline or node.poll() is not None:
                sys.exit("the sequencer did not start")
            time.sleep(0.05)
        addr = open(os.path.join(data, "address")).read().strip()
        duration = args.window + 6
        loadgen = subprocess.Popen(
            [args.bin, "loadgen", "--server", addr, "--data-dir", data, "--rate", str(args.rate),
             "--bundle", str(args.bundle), "--duration", str(duration)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(3)
        perf_data = os.path.join(work, "perf.data")
        pid = node.pid if args.side == "sequencer" else loadgen.pid
        ticks0 = cpu_ticks(pid)
        t0 = time.time()
        subprocess.run(
            ["perf", "record", "-q", "-F", str(args.frequency), "--call-graph", "dwarf,65528",
             "-p", str(pid), "-o", perf_data, "--", "sleep", str(args.window)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu_s = (cpu_ticks(pid) - ticks0) / os.sysconf("SC_CLK_TCK")
        wall = time.time() - t0
        out, _ = loadgen.communicate(timeout=duration + 60)
        loadgen = None
        m = re.search(r"orders accepted\s+(\d+)\s+\((\d+) orders/s, (\d+) envelopes in ([\d.]+) s\)", out)
        if not m:
            sys.exit("loadgen printed no summary:\n" + out)
        envelopes_per_s = int(m.group(3)) / float(m.group(4))
        script = subprocess.run(["perf", "script", "-i", perf_data, "-F", "ip,sym,dso"],
                                check=True, capture_output=True, text=True).stdout
    finally:
        if loadgen is not None:
            loadgen.kill()
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
    samples = read_samples(script)
    counts = collections.Counter()
    leaves = collections.defaultdict(collections.Counter)
    sort = classify if args.side == "sequencer" else classify_client
    for sample in samples:
        stage = sort(sample)
        counts[stage] += 1
        leaves[stage][short(sample[0]) if sample else "?"] += 1
    total = sum(counts.values()) or 1
    per_envelope_us = cpu_s / wall / envelopes_per_s * 1e6
    cpu_model = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    print(f"{args.side} CPU {cpu_s / wall:.2f} cores at {envelopes_per_s:.0f} envelopes/s "
          f"({args.rate} orders/s in bundles of {args.bundle}): {per_envelope_us:.1f} µs per envelope; "
          f"{total} samples; {cpu_model}")
    print()
    print("| stage | share of samples | µs per envelope | innermost functions (share of the stage) |")
    print("|---|---:|---:|---|")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        top = ", ".join(f"{leaf} {100 * k / n:.0f} %" for leaf, k in leaves[name].most_common(3))
        print(f"| {name} | {100 * n / total:.1f} % | {per_envelope_us * n / total:.1f} | {top} |")


if __name__ == "__main__":
    main()
