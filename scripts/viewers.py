#!/usr/bin/env python3
"""Explorer load test: does a crowd of explorer viewers slow the receipts?

Each round runs `sealbatch loadgen` at `--rate` for `--duration` seconds twice,
each time against a fresh `sealbatch run` (metrics and explorer on): once
alone, once with `--viewers` simulated viewers of the explorer (the order
alternates between rounds, so drift on a noisy machine favours neither). A
viewer is two threads on loopback: one browses over a keep-alive HTTP/1.1
connection (the batch list, the newest batch's page, curves and JSON, a traded
market's page and JSON, a check of a random commitment), pausing a random
exponential time of mean `--think-ms` between requests (0: back to back, a
stress mode); the other holds `/events` open and counts the batch events.
The viewers start once the sequencer is up, before loadgen, and stop after it.
They stand for browsers on other machines: on this shared machine their
threads run at `--nice` (default 19) so that they take idle CPU first, not
the sequencer's or the traders'; the CPU they used is printed.

Not part of CI. Example (about 2 minutes):

    cargo build --release
    python3 scripts/viewers.py --rate 40000 --duration 20 --viewers 100 --rounds 2

Prints markdown table rows, one per run: receipt p50/p99, accepted orders/s,
the sequencer's cores; with viewers, their requests (count, per second,
errors), request latency p50/p99/max, the batch events they received (total,
the fewest of one viewer, and the batches published), and the CPU time this
script used. Then the median receipt p99 without and with viewers, the
change, whether it is under 10 %, and the viewers' latency per route.
"""

import argparse
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 10
# Longer than the server's 15 s SSE keep-alive comments.
EVENTS_TIMEOUT_S = 30
EVENTS_RECONNECT_S = 1
JOIN_TIMEOUT_S = 15
P99_CHANGE_MAX = 10.0

# Route templates and their weights in a viewer's mix.
MIX = {
    "/": 20,
    "/api/batches": 15,
    "/batches/{e}": 15,
    "/batches/{e}/curves.svg": 10,
    "/api/batches/{e}": 10,
    "/markets/{m}": 10,
    "/api/markets/{m}": 10,
    "/check?commitment={hex}": 5,
    "/api/check/{hex}": 5,
}
# A random commitment is in no batch: these answer it "not found".
CHECK_ROUTES = {"/check?commitment={hex}", "/api/check/{hex}"}
EXPECTED_FOR_CHECK = {404, 410}


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def number(pattern, text, group=1, cast=float):
    match = re.search(pattern, text)
    return cast(match.group(group)) if match else None


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Viewer:
    """One explorer viewer: a browsing thread and an `/events` thread."""

    def __init__(self, metrics_port, think_s, seed, stop, nice):
        self.address = (HOST, metrics_port)
        self.nice = nice
        self.think_s = think_s
        self.rng = random.Random(seed)
        self.stop = stop
        self.latencies = collections.defaultdict(list)  # route -> seconds
        self.failures = collections.defaultdict(collections.Counter)  # route -> kind -> n
        self.events = 0
        self.newest = None
        self.market = None
        self.events_socket = None
        self.threads = [threading.Thread(target=self.niced, args=(self.browse,), daemon=True),
                        threading.Thread(target=self.niced, args=(self.listen,), daemon=True)]

    def niced(self, work):
        # Linux nices threads one by one: only the viewers' own threads, not
        # this script's main thread or the sequencer and loadgen it starts.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        work()

    def start(self):
        for thread in self.threads:
            thread.start()

    def interrupt(self):
        """Unblocks the `/events` thread's read (the browser stops between requests)."""
        sock = self.events_socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join(self, deadline):
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def next_route(self):
        route = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        # Until a batch is published there is no batch or market to look at.
        if ("{e}" in route and self.newest is None) or ("{m}" in route and self.market is None):
            return "/api/batches"
        return route

    def path(self, route):
        return route.format(e=self.newest, m=self.market,
                            hex=self.rng.getrandbits(256).to_bytes(32, "big").hex())

    def browse(self):
        conn = http.client.HTTPConnection(*self.address, timeout=REQUEST_TIMEOUT_S)
        try:
            while not self.stop.wait(self.pause()):
                route = self.next_route()
                body = self.fetch(conn, route)
                if route == "/api/batches" and body is not None:
                    self.learn(body)
        finally:
            conn.close()

    def pause(self):
        return self.rng.expovariate(1 / self.think_s) if self.think_s > 0 else 0

    def fetch(self, conn, route):
        """GETs the route's path, reads the whole body and times it; the body if 2xx."""
        start = time.perf_counter()
        try:
            conn.request("GET", self.path(route))
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            # The next request reconnects.
            conn.close()
            if not self.stop.is_set():
                self.failures[route][type(error).__name__] += 1
            return None
        self.latencies[route].append(time.perf_counter() - start)
        if 200 <= response.status < 300:
            return body
        if not (route in CHECK_ROUTES and response.status in EXPECTED_FOR_CHECK):
            self.failures[route][f"HTTP {response.status}"] += 1
        return None

    def learn(self, body):
        """The newest batch and a market traded in it, from `/api/batches`."""
        try:
            batches = json.loads(body)["batches"]
        except (ValueError, KeyError):
            self.failures["/api/batches"]["bad JSON"] += 1
            return
        if not batches:
            return
        newest = batches[0]
        self.newest = newest["e"]
        traded = [m["market"] for m in newest["markets"] if m["volume"] > 0]
        if traded:
            self.market = self.rng.choice(traded)
        elif self.market is None and newest["markets"]:
            self.market = newest["markets"][0]["market"]

    def listen(self):
        while not self.stop.is_set():
            conn = http.client.HTTPConnection(*self.address, timeout=EVENTS_TIMEOUT_S)
            try:
                conn.connect()
                self.events_socket = conn.sock
                if self.stop.is_set():
                    return
                conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
                response = conn.getresponse()
                if response.status != 200:
                    self.failures["/events"][f"HTTP {response.status}"] += 1
                else:
                    for line in response:
                        if line.startswith(b"event: batch"):
                            self.events += 1
            except (OSError, http.client.HTTPException) as error:
                if not self.stop.is_set():
                    self.failures["/events"][type(error).__name__] += 1
            finally:
                conn.close()
            # The server ends every connection at its lifetime; a browser reconnects.
            self.stop.wait(EVENTS_RECONNECT_S)


class Crowd:
    """`count` viewers of the explorer on `metrics_port`."""

    def __init__(self, metrics_port, count, think_ms, nice):
        self.stop_event = threading.Event()
        self.viewers = [Viewer(metrics_port, think_ms / 1000, seed, self.stop_event, nice)
                        for seed in range(count)]
        self.started = self.stopped = None
        self.stuck = 0

    def start(self):
        self.started = time.monotonic()
        for viewer in self.viewers:
            viewer.start()

    def stop(self):
        """Stops the viewers and joins them; counts the threads still running after it."""
        if self.stop_event.is_set():
            return
        self.stopped = time.monotonic()
        self.stop_event.set()
        for viewer in self.viewers:
            viewer.interrupt()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for viewer in self.viewers:
            viewer.join(deadline)
        self.stuck = sum(t.is_alive() for v in self.viewers for t in v.threads)

    def by_route(self):
        """route -> (latencies in seconds, failures by kind), over all viewers."""
        routes = collections.defaultdict(lambda: ([], collections.Counter()))
        for viewer in self.viewers:
            for route, values in viewer.latencies.items():
                routes[route][0].extend(values)
            for route, kinds in viewer.failures.items():
                routes[route][1].update(kinds)
        return routes

    def summary(self):
        routes = self.by_route()
        latencies = [v for values, _ in routes.values() for v in values]
        failures = {route: sum(kinds.values()) for route, (_, kinds) in routes.items()}
        # A failed request is still a request made; `/events` failures are not requests.
        requests = len(latencies) + sum(n for route, n in failures.items() if route != "/events")
        return {
            "requests": requests,
            "requests_per_s": requests / (self.stopped - self.started),
            "errors": sum(failures.values()),
            "stuck": self.stuck,
            "error_kinds": collections.Counter(
                {f"{route} {kind}": n for route, (_, kinds) in routes.items() for kind, n in kinds.items()}),
            "latency": (percentile(latencies, 0.5), percentile(latencies, 0.99),
                        max(latencies) if latencies else None),
            "events": sum(v.events for v in self.viewers),
            "events_min": min(v.events for v in self.viewers),
            "routes": routes,
        }


def start_sequencer(binary, work, batch_ms):
    data = os.path.join(work, "data")
    config = os.path.join(work, "sealbatch.toml")
    with open(config, "w") as f:
        f.write(f"batch_length_ms = {batch_ms}\n")
    port, metrics = free_port(), free_port(socket.SOCK_STREAM)
    server = subprocess.Popen(
        [binary, "run", "--config", config, "--data-dir", data,
         "--listen", f"{HOST}:{port}", "--metrics-listen", f"{HOST}:{metrics}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    # loadgen scrapes /metrics as it starts: without that first scrape it
    # reports no sequencer CPU.
    while not (os.path.exists(os.path.join(data, "tls", "fingerprint"))
               and http_status(metrics, "/metrics") == 200):
        if time.monotonic() > deadline or server.poll() is not None:
            stop_sequencer(server)
            raise RuntimeError("the sequencer did not start")
        time.sleep(0.05)
    time.sleep(0.5)
    return server, data, port, metrics


def stop_sequencer(server):
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def http_status(port, path):
    """The status of GET `path` on 127.0.0.1:`port`, or None if it cannot connect."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def check_explorer(metrics_port):
    """Fails early if the binary serves no explorer (built before it, or it is off)."""
    status = http_status(metrics_port, "/api/batches")
    if status != 200:
        raise RuntimeError(f"GET /api/batches answered {status}: the binary serves no explorer")


def parse_loadgen(out):
    return {
        "accepted": number(r"\((\d+) orders/s", out),
        "receipt_p50": number(r"receipt latency\s+p50\s+([\d.]+)", out),
        "receipt_p99": number(r"receipt latency.*?p99\s+([\d.]+)", out),
        "batches": number(r"close to result.*\((\d+) batches\)", out, 1, int),
        "cpu": number(r"sequencer ([\d.]+) cores", out),
    }


def run_once(args, binary, viewers):
    work = tempfile.mkdtemp(prefix="sealbatch-viewers-")
    server = crowd = None
    try:
        server, data, port, metrics = start_sequencer(binary, work, args.batch_ms)
        cpu_start, wall_start = time.process_time(), time.monotonic()
        if viewers:
            check_explorer(metrics)
            crowd = Crowd(metrics, viewers, args.think_ms, args.nice)
            crowd.start()
        load = subprocess.run(
            [binary, "loadgen", "--data-dir", data, "--server", f"{HOST}:{port}",
             "--metrics", f"{HOST}:{metrics}", "--rate", str(args.rate),
             "--traders", str(args.traders), "--duration", str(args.duration)],
            capture_output=True, text=True)
        if crowd:
            crowd.stop()
        result = parse_loadgen(load.stdout)
        result.update(viewers=viewers,
                      python_cpu=time.process_time() - cpu_start,
                      wall=time.monotonic() - wall_start,
                      crowd=crowd.summary() if crowd else None)
        if load.returncode != 0 or result["receipt_p99"] is None:
            print(f"loadgen exited {load.returncode}:\n{load.stdout}{load.stderr[-2000:]}",
                  file=sys.stderr)
        return result
    finally:
        if crowd:
            crowd.stop()
        if server:
            stop_sequencer(server)
        shutil.rmtree(work, ignore_errors=True)


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def ms(seconds):
    return None if seconds is None else seconds * 1000


HEADER = ("| round | viewers | receipt p50 / p99 | accepted orders/s | sequencer cores "
          "| viewer requests | requests/s | errors | viewer latency p50 / p99 / max "
          "| events total / min per viewer (batches) | python CPU |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def row(round_number, r):
    head = (f"| {round_number} | {r['viewers']} "
            f"| {fmt(r['receipt_p50'], '.2f')} / {fmt(r['receipt_p99'], '.2f')} ms "
            f"| {fmt(r['accepted'], ',.0f')} | {fmt(r['cpu'], '.2f')} ")
    python = f"| {r['python_cpu']:.1f} s ({r['python_cpu'] / r['wall']:.2f} cores) |"
    c = r["crowd"]
    if c is None:
        return head + "| - | - | - | - | - " + python
    p50, p99, most = (ms(v) for v in c["latency"])
    return (head + f"| {c['requests']:,} | {c['requests_per_s']:,.0f} | {c['errors']:,} "
            f"| {fmt(p50, '.1f')} / {fmt(p99, '.1f')} / {fmt(most, '.0f')} ms "
            f"| {c['events']:,} / {c['events_min']:,} ({fmt(r['batches'], 'd')}) " + python)


def route_table(results):
    """Viewer latency by route, over all viewer runs."""
    routes = collections.defaultdict(lambda: ([], collections.Counter()))
    for r in results:
        if r["crowd"]:
            for route, (values, kinds) in r["crowd"]["routes"].items():
                routes[route][0].extend(values)
                routes[route][1].update(kinds)
    lines = ["| route | responses | p50 ms | p99 ms | max ms | errors |",
             "|---|---:|---:|---:|---:|---|"]
    # `/events` is a stream, not timed: only its errors.
    for route in list(MIX) + ["/events"]:
        values, kinds = routes.get(route, ([], collections.Counter()))
        errors = ", ".join(f"{kind} × {n}" for kind, n in kinds.most_common()) or "0"
        lines.append(f"| `{route}` | {len(values):,} | {fmt(ms(percentile(values, 0.5)), '.1f')} "
                     f"| {fmt(ms(percentile(values, 0.99)), '.1f')} "
                     f"| {fmt(ms(max(values) if values else None), '.0f')} | {errors} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/sealbatch")
    parser.add_argument("--rate", type=int, default=40000)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--think-ms", type=float, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-ms", type=int, default=100)
    parser.add_argument("--traders", type=int, default=8)
    parser.add_argument("--nice", type=int, default=19,
                        help="niceness of this script's viewers (they stand for browsers on other "
                             "machines: on a shared machine they take idle CPU first; 0 to compete)")
    args = parser.parse_args()
    # A terminated script still stops its sequencer and viewers (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    binary = os.path.abspath(args.binary)
    print(f"{args.rate:,} orders/s for {args.duration:g} s, {args.traders} traders, "
          f"{args.batch_ms} ms batches; {args.viewers} viewers, mean think time {args.think_ms:g} ms, niceness {args.nice}\n")
    print(HEADER, flush=True)
    results = []
    for round_number in range(1, args.rounds + 1):
        order = (0, args.viewers) if round_number % 2 == 1 else (args.viewers, 0)
        for viewers in order:
            r = run_once(args, binary, viewers)
            results.append(r)
            print(row(round_number, r), flush=True)
            if r["crowd"] and r["crowd"]["error_kinds"]:
                print(f"errors: {dict(r['crowd']['error_kinds'].most_common())}", file=sys.stderr)
            if r["crowd"] and r["crowd"]["stuck"]:
                print(f"{r['crowd']['stuck']} viewer threads did not stop", file=sys.stderr)
    alone = [r["receipt_p99"] for r in results if not r["viewers"] and r["receipt_p99"] is not None]
    watched = [r["receipt_p99"] for r in results if r["viewers"] and r["receipt_p99"] is not None]
    print("\n" + route_table(results))
    if not alone or not watched:
        print("\nno receipt p99 parsed for one side: no comparison")
        return 1
    before, after = statistics.median(alone), statistics.median(watched)
    change = (after - before) / before * 100
    verdict = "under" if abs(change) < P99_CHANGE_MAX else "not under"
    print(f"\nmedian receipt p99: {before:.2f} ms without viewers, {after:.2f} ms with "
          f"{args.viewers}: {change:+.1f} %, {verdict} {P99_CHANGE_MAX:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
