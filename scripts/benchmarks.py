#!/usr/bin/env python3
"""Benchmark tables for BENCHMARKS.md: runs the benchmarks and prints markdown.

Each table is produced by one of the project's own benchmark commands
(criterion benches under `benches/`, `sealbatch bench clearing`, `sealbatch
run` + `sealbatch loadgen`, `scripts/overload.py`), whose output this script
parses. Every table is headed by the machine (CPU model, logical CPUs,
memory, kernel), the date (UTC), the git revision, the load average before
and after, and the exact command that produced it.

Not part of CI. Python 3 standard library only. From the repository root:

    python3 scripts/benchmarks.py --list
    python3 scripts/benchmarks.py                       # every table (about half an hour)
    python3 scripts/benchmarks.py --only clearing,journal
    python3 scripts/benchmarks.py --quick --only journal  # a smoke run, seconds

`--quick` shortens every measurement (criterion `--quick` with small warm-up
and measurement times, fewer clearing sizes, loadgen runs of a few seconds at
a low rate): it proves the commands run and their output parses. Its figures
are not measurements to publish, and its tables say so.

Benchmarks share the machine with whatever else runs on it: run on an idle
machine and compare figures only within one run.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Criterion options for a full run and for a smoke run. Group-level
# measurement times in the benches take precedence over these; criterion's
# `--quick` bounds every benchmark regardless.
CRITERION_FULL = ["--color", "never", "--noplot"]
CRITERION_QUICK = ["--color", "never", "--noplot", "--quick", "--discard-baseline",
                   "--warm-up-time", "0.2", "--measurement-time", "1.0"]

# Hostile clients and the rates of the published table (see `sealbatch
# loadgen --help`, `--hostile`).
HOSTILE_KINDS = [
    ("schedule-flood", 5000), ("connect-flood", 1000), ("handshake-flood", 1000),
    ("slowloris", 200), ("garbage", 200), ("quota", 5000), ("replay", 2000),
    ("forged", 40), ("forged", 400),
]


def log(message):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- machine ---

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine():
    """The machine's description: CPU model, logical CPUs, memory, kernel."""
    cpuinfo = read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    model = model.group(1).strip() if model else (platform.processor() or "unknown CPU")
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    notes = []
    if "hypervisor" in flags:
        vendor = ""
        if shutil.which("lscpu"):
            out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
            found = re.search(r"Hypervisor vendor:\s*(\S+)", out)
            vendor = found.group(1) + " " if found else ""
        notes.append(f"{vendor}virtual machine")
    # The envelope figures depend on it: curve25519-dalek picks its AVX-512
    # IFMA backend at run time when the CPU has it.
    notes.append("AVX-512 IFMA" if "avx512ifma" in flags
                 else "AVX2" if "avx2" in flags else "no AVX2")
    mem = re.search(r"^MemTotal:\s*(\d+) kB", read("/proc/meminfo"), re.M)
    mem = f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "unknown memory"
    cpus = os.cpu_count() or 0
    return (f"{model}, {cpus} logical CPU{'s' if cpus != 1 else ''} "
            f"({', '.join(notes)}), {mem}, {platform.system()} {platform.release()}")


def rustc():
    try:
        out = subprocess.run(["rustc", "--version"], capture_output=True, text=True, cwd=ROOT)
        return out.stdout.strip() or "rustc unknown"
    except OSError:
        return "rustc unknown"


def revision():
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" with uncommitted changes" if dirty else "")


def file_system(path):
    """The type and device of the file system holding `path`, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("", "unknown file system", "")
    for line in read("/proc/mounts").splitlines():
        fields = line.split()
        if len(fields) >= 3:
            device, mount, kind = fields[0], fields[1], fields[2]
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, kind, device)
    return f"{best[1]} on {best[2]}" if best[2] else best[1]


def load_average():
    fields = read("/proc/loadavg").split()
    return fields[0] if fields else "?"


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


# -------------------------------------------------------------- commands ---

def run(command, quiet=False, ok=(0,)):
    """Runs `command` in the repository, echoing it; returns its stdout.

    An exit status outside `ok` is an error naming the command, the status
    and the panic message or last line of its standard error.
    """
    log("$ " + " ".join(shlex.quote(c) for c in command))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode not in ok:
        sys.stderr.write(result.stderr[-4000:])
        lines = [l.strip() for l in ANSI.sub("", result.stderr).splitlines() if l.strip()]
        panic = next((i for i, l in enumerate(lines) if " panicked at " in l), None)
        why = (" ".join(lines[panic:panic + 2]) if panic is not None
               else lines[-1] if lines else "no output on stderr")
        raise RuntimeError(f"`{display(command)}` exited with {result.returncode}: {why}")
    if not quiet:
        sys.stderr.write(result.stderr[-400:] if result.stderr else "")
    return ANSI.sub("", result.stdout)


def target_dir():
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["target_directory"]


def build_binary():
    run(["cargo", "build", "--release", "--bin", "sealbatch"], quiet=True)
    return os.path.join(target_dir(), "release", "sealbatch")


def display(command):
    """A command as a reader would type it from the repository root."""
    words = []
    for word in command:
        if os.path.isabs(word) and word.startswith(ROOT + os.sep):
            word = os.path.relpath(word, ROOT)
        elif os.path.isabs(word) and word.endswith(os.sep + "sealbatch"):
            word = "target/release/sealbatch"
        elif word == sys.executable:
            word = "python3"
        words.append(shlex.quote(word))
    return " ".join(words)


# ------------------------------------------------------------- criterion ---

TIME = r"([\d.]+)\s*(ps|ns|µs|us|ms|s)"
UNITS = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
RATE_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_criterion(text):
    """Criterion's report: [(id, low_s, median_s, high_s, elements_per_s or None)].

    Criterion prints `ID  time: [low median high]` (the id on the line
    before when it is long) and, for groups with a throughput,
    `thrpt: [.. median ..]` on the next line.
    """
    results = []
    previous = ""
    for raw in text.splitlines():
        line = ANSI.sub("", raw).rstrip()
        times = re.search(r"time:\s*\[\s*" + TIME + r"\s+" + TIME + r"\s+" + TIME + r"\s*\]",
                          line)
        if times:
            name = line[:line.index("time:")].strip() or previous.strip()
            name = name.removeprefix("Benchmarking ").split(": ")[0]
            values = [float(times.group(i)) * UNITS[times.group(i + 1)] for i in (1, 3, 5)]
            results.append([name, *values, None])
        else:
            rate = re.search(r"thrpt:\s*\[\s*[\d.]+\s*\S+\s+([\d.]+)\s*([KMG]?)\s*elem/s", line)
            if rate and results and results[-1][4] is None:
                results[-1][4] = float(rate.group(1)) * RATE_UNITS[rate.group(2)]
        if line.strip():
            previous = line
    return [tuple(r) for r in results]


def criterion(bench, filter_, quick, extra=()):
    """Runs one criterion bench with a filter; returns (command, results)."""
    command = ["cargo", "bench", "--bench", bench, "--", *extra,
               *(CRITERION_QUICK if quick else CRITERION_FULL)]
    if filter_:
        command.append(filter_)
    results = parse_criterion(run(command, quiet=True))
    if not results:
        raise RuntimeError(f"no criterion results parsed from `{display(command)}`")
    return command, results


def seconds(value):
    """A duration with three significant digits and a unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if value >= scale or unit == "ns":
            number = value / scale
            digits = 0 if number >= 100 else 1 if number >= 10 else 2
            return f"{number:.{digits}f} {unit}"
    return str(value)


def rate(value, unit):
    if value is None:
        return "–"
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix} {unit}/s"
    return f"{value:.3g} {unit}/s"


def criterion_table(results, labels, units):
    """Markdown rows: what, criterion id, median, interval, throughput."""
    rows = ["| what | criterion id | median | 95 % interval | throughput |",
            "|---|---|---:|---:|---:|"]
    for name, low, median, high, per_s in results:
        label = next((l(m) for pattern, l in labels
                      for m in [re.fullmatch(pattern, name)] if m), name)
        unit = next((u for prefix, u in units if name.startswith(prefix)), "elements")
        rows.append(f"| {label} | `{name}` | {seconds(median)} | "
                    f"{seconds(low)} – {seconds(high)} | {rate(per_s, unit)} |")
    return rows


# --------------------------------------------------------------- tables ---

def table_clearing(args, binary):
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "clearing.json")
        command = [binary, "bench", "clearing", "--json", report_path]
        if args.quick:
            command += ["--quick", "--max-orders", "100000"]
        run(command, quiet=True)
        with open(report_path) as f:
            report = json.load(f)
    rows = ["| shape | orders | threads | median | min – max | M orders/s (median) | speed-up | runs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    one = {(r["shape"], r["orders"]): r["orders_per_s"]
           for r in report["rows"] if r["threads"] == 1}
    for r in report["rows"]:
        base = one.get((r["shape"], r["orders"]))
        speedup = f"{r['orders_per_s'] / base:.2f}×" if base else ""
        busy = " (busy)" if r["busy"] else ""
        rows.append(f"| {r['shape']}{busy} | {r['orders']:,} | {r['threads']} | "
                    f"{r['median_ns'] / 1e6:.3f} ms | {r['min_ns'] / 1e6:.3f} – "
                    f"{r['max_ns'] / 1e6:.3f} ms | {r['orders_per_s'] / 1e6:,.1f} | "
                    f"{speedup} | {r['runs']} |")
    if len(rows) == 2:
        raise RuntimeError("no rows in `sealbatch bench clearing --json`")
    notes = [f"revision {report['git_revision']}; each run includes {report['includes']}"]
    if report.get("peak_rss_kib"):
        notes.append(f"peak resident memory {report['peak_rss_kib'] / 1024:,.0f} MiB")
    return "Clearing throughput", [command[:3] + command[5:]], rows, notes


def table_clearing_criterion(args, _binary):
    command, results = criterion("clearing", None, args.quick)
    labels = [
        (r"one_market/(rayon|sequential)/(\d+)",
         lambda m: f"1 market × {int(m[2]):,} orders, "
                   + ("`clear_batch`" if m[1] == "rayon" else "`clear_batch_sequential`")),
        (r"64_markets_x_100000/(.+)", lambda m: f"64 markets × 100,000 orders, {m[1]}"),
        (r"canonical/sort_and_clear/(\d+)",
         lambda m: f"`canonical_batch` + `clear_batch`, {int(m[1]):,} orders"),
    ]
    return ("Clearing under criterion", [command],
            criterion_table(results, labels, [("", "orders")]), [])


def orders(count):
    return f"{int(count):,} order{'s' if count != '1' else ''}"


def table_envelope(args, _binary):
    command, results = criterion("envelope", r"^(cpu|envelope|open_batch_10k|merkle)/",
                                 args.quick)
    labels = [
        (r"envelope/seal/(\d+)", lambda m: f"seal a bundle of {orders(m[1])} (client)"),
        (r"envelope/open_one/(\d+)", lambda m: f"open one envelope of {orders(m[1])}"),
        (r"envelope/check_shape/(\d+)", lambda m: f"shape check, {orders(m[1])}"),
        (r"cpu/open_one/(\d+)",
         lambda m: f"open one envelope of {orders(m[1])}, thread CPU time"),
        (r"cpu/open_batch_per_envelope/(\d+)",
         lambda m: f"open a batch of 256 envelopes of {orders(m[1])} on 1 thread, CPU time"),
        (r"cpu/ristretto_varbase_mul",
         lambda m: "one variable-base Ristretto multiplication, CPU time"),
        (r"cpu/ed25519_verify_strict/(\d+)",
         lambda m: f"one `verify_strict`, message of {orders(m[1])}, CPU time"),
        (r"cpu/chacha20poly1305/(\d+)",
         lambda m: f"ChaCha20-Poly1305, {orders(m[1])}, CPU time"),
        (r"open_batch_10k/orders(\d+)/(\d+)threads",
         lambda m: f"open 10⁴ envelopes of {orders(m[1])}, {m[2]} thread"
                   + ("s" if m[2] != "1" else "")),
        (r"merkle/tree_100k", lambda m: "Merkle tree over 10⁵ commitments"),
        (r"merkle/root_100k_sorted", lambda m: "Merkle root over 10⁵ sorted commitments"),
    ]
    units = [("cpu/open_batch", "envelopes"), ("open_batch_10k", "orders")]
    return "Envelopes", [command], criterion_table(results, labels, units), []


def table_opening(args, _binary):
    command, results = criterion("envelope", r"^open_shaped_4800", args.quick)
    labels = [
        (r"open_shaped_4800x16_8accounts/(\d+)threads",
         lambda m: f"open 4,800 shape-checked envelopes of 16 orders, {m[1]} thread"
                   + ("s" if m[1] != "1" else "")),
        (r"open_shaped_4800x16_3pct_forged/(\d+)threads",
         lambda m: f"the same with 3 % forged signatures, {m[1]} thread"
                   + ("s" if m[1] != "1" else "")),
    ]
    return ("Opening a batch of 4,800 envelopes", [command],
            criterion_table(results, labels, [("", "envelopes")]), [])


def table_journal(args, _binary):
    command, results = criterion("journal", None, args.quick)
    labels = [
        (r"journal_group_commit_1KiB/records_per_fsync/(\d+)",
         lambda m: f"{m[1]} record{'s' if m[1] != '1' else ''} of 1 KiB per `fdatasync`"),
        (r"journal_writer_thread_1KiB/records/(\d+)",
         lambda m: f"writer thread, {int(m[1]):,} records of 1 KiB until durable"),
        (r"journal_recovery_1KiB/records/(\d+)",
         lambda m: f"open and recover a journal of {int(m[1]):,} records of 1 KiB"),
    ]
    where = tempfile.gettempdir()
    return ("Journal", [command], criterion_table(results, labels, [("", "records")]),
            [f"the benches write their journals under {where} ({file_system(where)})"])


def table_turnaround(args, _binary):
    # The bench takes a size as its first numeric argument (which is also a
    # criterion filter matching it); without one it runs 10^3, 10^4, 10^5.
    extra = ["1000"] if args.quick else []
    command, results = criterion("sequencer", None, args.quick, extra)
    labels = [(r"turnaround/envelopes_x16/(\d+)",
               lambda m: f"{int(m[1]):,} envelopes × 16 orders")]
    return ("Batch turnaround", [command],
            criterion_table(results, labels, [("", "orders")]), [])


class Sequencer:
    """A fresh `sealbatch run` on a temporary data directory."""

    def __init__(self, binary, batch_ms):
        self.work = tempfile.mkdtemp(prefix="sealbatch-benchmarks-")
        self.data = os.path.join(self.work, "data")
        config = os.path.join(self.work, "sealbatch.toml")
        with open(config, "w") as f:
            f.write(f"batch_length_ms = {batch_ms}\n")
        self.port = free_port(socket.SOCK_DGRAM)
        self.metrics = free_port(socket.SOCK_STREAM)
        self.command = [binary, "run", "--config", config, "--data-dir", self.data,
                        "--listen", f"127.0.0.1:{self.port}",
                        "--metrics-listen", f"127.0.0.1:{self.metrics}"]
        log("$ " + display(self.command) + " &")
        self.shown = display(self.command) + " &"
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(self.data, "tls", "fingerprint")):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the sequencer did not start")
            time.sleep(0.05)
        time.sleep(0.5)

    def client_args(self):
        return ["--data-dir", self.data, "--server", f"127.0.0.1:{self.port}",
                "--metrics", f"127.0.0.1:{self.metrics}"]

    def stop(self):
        """SIGTERM, then its exit status."""
        status = self.process.poll()
        if status is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                status = self.process.wait()
        shutil.rmtree(self.work, ignore_errors=True)
        return status


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def number(pattern, text, cast=float):
    found = re.search(pattern, text)
    return cast(found.group(1)) if found else None


def loadgen_report(text):
    """The figures of one `sealbatch loadgen` report."""
    return {
        "accepted": number(r"orders accepted\s+\d+\s+\((\d+) orders/s", text),
        "envelopes": number(r"(\d+) envelopes in", text, int),
        "receipt_p50": number(r"receipt latency\s+p50\s+([\d.]+)", text),
        "receipt_p99": number(r"receipt latency.*?p99\s+([\d.]+)", text),
        "ctr_p50": number(r"close to result\s+p50\s+([\d.]+)", text),
        "ctr_p99": number(r"close to result.*?p99\s+([\d.]+)", text),
        "batches": number(r"\((\d+) batches\)", text, int),
        "included": number(r"receipts included\s+(\d+) of", text, int),
        "receipts": number(r"receipts included\s+\d+ of (\d+)", text, int),
        "refused": sum(int(n) for n in re.findall(r"^rejected\s+(\d+)", text, re.M)),
        "per_batch": number(r"sequencer per batch\s+(\d+) envelopes", text, int),
        "decrypt": number(r"decrypt ([\d.]+) ms", text),
        "clearing": number(r"clearing ([\d.]+) ms", text),
        "cpu_sequencer": number(r"sequencer ([\d.]+) cores", text),
        "cpu_loadgen": number(r"loadgen ([\d.]+) cores", text),
        "memory": number(r"sequencer memory\s+([\d.]+) MiB", text),
    }


def fmt(value, spec="", suffix=""):
    return "–" if value is None else format(value, spec) + suffix


def table_loadgen(args, binary):
    # (batch length ms, offered orders/s, seconds) of the published table.
    plan = ([(100, 4000, 3)] if args.quick
            else [(100, 100000, 20), (1000, 80000, 30), (5000, 16000, 60)])
    rows = ["| batch length | offered orders/s | run | accepted orders/s | envelopes per batch "
            "| receipt p50 / p99 | close→result p50 / p99 | receipts included | refused "
            "| decrypt / clearing per batch | CPU sequencer / loadgen | sequencer memory "
            "| sequencer exit |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    commands = []
    for batch_ms, offered, duration in plan:
        sequencer = Sequencer(binary, batch_ms)
        command = [binary, "loadgen", *sequencer.client_args(), "--rate", str(offered),
                   "--traders", "8", "--duration", str(duration)]
        try:
            out = run(command, quiet=True)
        finally:
            status = sequencer.stop()
        commands += [sequencer.shown, command]
        r = loadgen_report(out)
        rows.append(
            f"| {batch_ms} ms | {offered:,} | {duration} s | {fmt(r['accepted'], ',.0f')} "
            f"| {fmt(r['per_batch'], ',')} "
            f"| {fmt(r['receipt_p50'], '.1f')} / {fmt(r['receipt_p99'], '.1f')} ms "
            f"| {fmt(r['ctr_p50'], '.0f')} / {fmt(r['ctr_p99'], '.0f')} ms "
            f"| {fmt(r['included'], ',')} of {fmt(r['receipts'], ',')} | {r['refused']:,} "
            f"| {fmt(r['decrypt'], '.1f')} / {fmt(r['clearing'], '.1f')} ms "
            f"| {fmt(r['cpu_sequencer'], '.2f')} / {fmt(r['cpu_loadgen'], '.2f')} "
            f"| {fmt(r['memory'], '.1f', ' MiB')} | {status} |")
    notes = ["8 traders, bundles of 16 orders, sequencer and loadgen on the same machine, "
             "a fresh data directory per row; latencies measured by the traders; decrypt, "
             "clearing, sequencer CPU and memory from the sequencer's /metrics"]
    return "End to end: sealbatch run + sealbatch loadgen", commands, rows, notes


def table_hostile(args, binary):
    kinds = [("garbage", 200)] if args.quick else HOSTILE_KINDS
    rate, duration = (4000, 3) if args.quick else (20000, 20)
    rows = ["| hostile client | its rate | what it got | honest receipt p99 without → with "
            "| close→result p99 without → with | honest refused without / with "
            "| sequencer CPU without → with | sequencer memory with |",
            "|---|---:|---|---:|---:|---:|---:|---:|"]
    commands = []
    for kind, hostile_rate in kinds:
        sequencer = Sequencer(binary, 100)
        command = [binary, "loadgen", *sequencer.client_args(), "--rate", str(rate),
                   "--traders", "4", "--duration", str(duration),
                   "--hostile", kind, "--hostile-rate", str(hostile_rate)]
        try:
            out = run(command, quiet=True)
        finally:
            sequencer.stop()
        commands.append(command)
        baseline_text, _, attacked_text = out.partition("with a hostile client:")
        base, hit = loadgen_report(baseline_text), loadgen_report(attacked_text)
        attempts = number(r"hostile client\s+\S+ at \d+/s: (\d+) attempts", attacked_text, int)
        answers = re.findall(r"^\s+answered\s+(\d+)\s+(.+)$", attacked_text, re.M)
        got = f"{fmt(attempts, ',')} attempts" + "".join(
            f"; {int(n):,} {what.strip()}" for n, what in answers)
        rows.append(
            f"| `{kind}` | {hostile_rate:,}/s | {got} "
            f"| {fmt(base['receipt_p99'], '.1f')} → {fmt(hit['receipt_p99'], '.1f')} ms "
            f"| {fmt(base['ctr_p99'], '.0f')} → {fmt(hit['ctr_p99'], '.0f')} ms "
            f"| {base['refused']:,} / {hit['refused']:,} "
            f"| {fmt(base['cpu_sequencer'], '.2f')} → {fmt(hit['cpu_sequencer'], '.2f')} "
            f"| {fmt(hit['memory'], '.1f', ' MiB')} |")
    notes = [f"honest load: 4 traders at {rate:,} orders/s for {duration} s without, then "
             f"{duration} s with the hostile client; a fresh sequencer per row (100 ms batches)"]
    return "Hostile clients", commands, rows, notes


def table_overload(args, binary):
    command = [sys.executable, os.path.join(ROOT, "scripts", "overload.py"), "--binary", binary]
    if args.quick:
        # A smoke run on a machine that may be busy: any p99 counts as sustainable.
        command += ["--rates", "4000", "--duration", "3", "--overload-duration", "3",
                    "--p99-ms", "1000"]
    else:
        command += ["--rates", "100000,120000,140000,160000"]
    # Status 1 with a table: no rate met the p99 bound (said in its output).
    out = run(command, quiet=True, ok=(0, 1))
    lines = out.splitlines()
    rows = [l for l in lines if l.startswith("|")]
    # One header for both parts: overload.py repeats it before the overload run.
    header = rows[:2]
    rows = header + [r for r in rows[2:] if r not in header]
    notes = [l.strip() for l in lines if l.strip() and not l.startswith("|")]
    if len(rows) <= 2:
        raise RuntimeError("no rows parsed from scripts/overload.py")
    return "Overload: the sustainable rate, then twice it", [command], rows, notes


TABLES = {
    "clearing": (table_clearing, True, "sealbatch bench clearing: orders/s per shape"),
    "clearing-criterion": (table_clearing_criterion, False,
                           "cargo bench --bench clearing: the same shapes under criterion"),
    "envelope": (table_envelope, False,
                 "cargo bench --bench envelope: sealing, opening, CPU-time costs, Merkle"),
    "opening": (table_opening, False,
                "cargo bench --bench envelope -- open_shaped_4800: a 4,800-envelope batch"),
    "journal": (table_journal, False, "cargo bench --bench journal: group commit, recovery"),
    "turnaround": (table_turnaround, False,
                   "cargo bench --bench sequencer: close to result on a real journal"),
    "loadgen": (table_loadgen, True, "sealbatch run + sealbatch loadgen, end to end"),
    "overload": (table_overload, True, "scripts/overload.py: sustainable rate and twice it"),
    "hostile": (table_hostile, True, "sealbatch loadgen --hostile KIND, each kind"),
}


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="tables:\n" + "\n".join(f"  {name:<20} {TABLES[name][2]}" for name in TABLES))
    parser.add_argument("--only", default=",".join(TABLES),
                        help="comma-separated tables to produce (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: short measurements whose figures are not to publish")
    parser.add_argument("--list", action="store_true", help="list the tables and exit")
    parser.add_argument("--out", help="also write the markdown to this file")
    args = parser.parse_args()
    if args.list:
        for name, (_, _, what) in TABLES.items():
            print(f"{name:<20} {what}")
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        parser.error(f"unknown table {', '.join(unknown)}; --list shows them")

    host = machine()
    binary = build_binary() if any(TABLES[n][1] for n in names) else None
    header = [
        "# sealbatch benchmark tables",
        "",
        f"- Machine: {host}",
        f"- Toolchain: {rustc()}",
        f"- Revision: {revision()}",
        f"- Date: {today()} (UTC)",
        f"- Mode: {'quick (a smoke run: figures not comparable, not to publish)' if args.quick else 'full'}",
        f"- Produced by: `python3 scripts/benchmarks.py --only {','.join(names)}"
        f"{' --quick' if args.quick else ''}`",
    ]
    out = open(args.out, "w") if args.out else None

    def emit(lines):
        text = "\n".join(lines) + "\n"
        sys.stdout.write(text)
        sys.stdout.flush()
        if out:
            out.write(text)
            out.flush()

    emit(header)
    failed = []
    for name in names:
        log(f"== {name}")
        load_before = load_average()
        try:
            title, commands, rows, notes = TABLES[name][0](args, binary)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            log(f"{name}: {error}")
            failed.append(name)
            emit(["", f"## {name}", "", f"Failed: {error}"])
            continue
        section = [
            "",
            f"## {title}{' (quick smoke run)' if args.quick else ''}",
            "",
            f"{host}; {today()}; revision {revision()}; "
            f"load average {load_before} before, {load_average()} after.",
            "",
            "```sh",
            *(c if isinstance(c, str) else display(c) for c in commands),
            "```",
            "",
            *rows,
        ]
        if notes:
            section += ["", *(f"{note}  " for note in notes)]
        emit(section)
    if out:
        out.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
