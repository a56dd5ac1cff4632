#!/usr/bin/env python3
"""Polling benchmark: `maintd daemon` polling a simulated cluster of 1,000 and 5,000 nodes.

For each size it starts `maintd sim --cluster-only` (N nodes, 20 N instances) and
`maintd daemon` against it in dry-run (poll interval 5 s, round delay 1 h), both on
127.0.0.1 only. After the first sweep and a warm-up (15 s: the round maintd plans at
start is over), it measures over a window (60 s by default):

- the daemon's CPU (percent of one core) and RSS (largest sample; MB and KB per node);
- failed polls (`maintd_poll_failures_total` on /metrics, since the daemon started);
- detection latency: some nodes' diagnose reports change through the simulator's control
  API at known times spread over the window; each change is detected when its incident is
  noted, at the incident's own `ctime` in /1/status;
- /1/status and /1/nodes latency, sampled throughout;
- one full sweep each way, side by side against the same simulator: maintd's (the span
  of the nodes' last report times in /1/nodes: every node polled within it, at most
  `monitoring.max_concurrent_polls` at once) and a sequential baseline that fetches each
  node's report in turn over one connection, as Ganeti 2.17's maintd did.

Python 3 standard library only. Build first: `cargo build --release -p maintd-actors`.
Usage: `python3 bench/poll.py [--sizes 1000,5000] [--seconds 60] [--maintd PATH]`.
RSS is the largest sample in the window. CPU is measured in the window only.
"""

import argparse
import http.client
import json
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
INSTANCES_PER_NODE = 20


def default_binary():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")
    return os.path.join(target, "release", "maintd")


def percentile(values, fraction):
    """The nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(round(fraction * len(ordered) + 0.5)))
    return ordered[min(rank, len(ordered)) - 1]


class Proc:
    """A child process whose stdout lines are read in the background."""

    def __init__(self, args, env, log_path):
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.popen.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))

    def line(self, marker, timeout):
        """The text after `marker` on the first stdout line holding it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.popen.poll() is not None and self.lines.empty():
                raise RuntimeError(f"no line with {marker!r} from {self.popen.args[1]}")
            try:
                text = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if marker in text:
                return text.split(marker, 1)[1].strip()

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


class Http:
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=30):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, path):
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)


def port_of(url):
    match = re.match(r"http://127\.0\.0\.1:(\d+)", url)
    if not match:
        raise RuntimeError(f"not a loopback URL: {url!r}")
    return int(match.group(1))


class ProcStats:
    """CPU time and RSS of a process from /proc."""

    def __init__(self, pid):
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def failed_polls(api):
    status, body = api.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics: {status}")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("maintd_poll_failures_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def sampler(port, stop, latencies):
    """GET /1/status and /1/nodes in turn every 250 ms, recording each answer's time."""
    api = Http(port)
    paths = ["/1/status", "/1/nodes"]
    turn = 0
    while not stop.is_set():
        path = paths[turn % 2]
        turn += 1
        started = time.monotonic()
        try:
            status, _ = api.request("GET", path)
            if status == 200:
                latencies[path].append(time.monotonic() - started)
            else:
                latencies["errors"].append(path)
        except (OSError, http.client.HTTPException):
            latencies["errors"].append(path)
        stop.wait(0.25)


def sequential_sweep(sim_port, nodes):
    """Each node's report fetched in turn over one connection; the whole sweep's time."""
    conn = Http(sim_port)
    started = time.monotonic()
    failures = 0
    for node in nodes:
        status, _ = conn.request("GET", f"/mond/{node}/1/report/node/diagnose")
        failures += status != 200
    return time.monotonic() - started, failures


def run_size(binary, nodes, seconds, interval, warmup, workdir, seed):
    instances = nodes * INSTANCES_PER_NODE
    env = dict(os.environ)
    env.update(
        {
            "RUST_LOG": "warn",
            # Never pick up this machine's Ganeti key or ssconf.
            "MAINTD__CLUSTER__HMAC_KEY": "",
            "MAINTD__CLUSTER__SSCONF_DIR": os.path.join(workdir, "no-ssconf"),
            "MAINTD__API__SSL": "false",
        }
    )
    users = os.path.join(workdir, "api-users")
    with open(users, "w") as f:
        f.write("reader bench-reader-secret read\n")
    env["MAINTD__API__USERS_FILE"] = users

    sim = Proc(
        [
            binary, "sim", "--cluster-only",
            "--nodes", str(nodes), "--instances", str(instances), "--seed", "1",
            "--job-seconds", "0", "--sim-listen", f"{HOST}:0",
            "--luxi-socket", os.path.join(workdir, "luxi"),
            "--state-dir", os.path.join(workdir, "sim"),
        ],
        env,
        os.path.join(workdir, "sim.log"),
    )
    daemon = None
    try:
        summary = sim.line("simulated cluster:", 300)
        master = summary.rsplit("master ", 1)[1].strip()
        control = sim.line("control API:", 30)
        diagnose_url = sim.line("diagnose URL:", 30)
        sim_port = port_of(control)
        started = time.time()
        daemon = Proc(
            [
                binary, "daemon", "-f",
                "--luxi-socket", os.path.join(workdir, "luxi"),
                "--diagnose-url", diagnose_url,
                "--node-name", master,
                "--state-dir", os.path.join(workdir, "state"),
                "-b", HOST, "-p", "0",
                "--round-delay", "3600",
                "--poll-interval", str(interval),
                "--dry-run",
            ],
            env,
            os.path.join(workdir, "daemon.log"),
        )
        api_port = port_of(daemon.line("maintd API:", 120))
        api = Http(api_port)
        stats = ProcStats(daemon.popen.pid)

        # Warm-up: until every node has reported once (the first sweep).
        deadline = time.monotonic() + 60 + 2 * interval
        while time.monotonic() < deadline:
            try:
                reported = [n for n in api.json("/1/nodes") if n.get("last_report_at")]
            except RuntimeError:
                # 503 until the daemon has found it is the master.
                reported = []
            if len(reported) >= nodes:
                break
            time.sleep(0.5)
        first_sweep = time.time() - started
        time.sleep(warmup)

        # The measurement window.
        rng = random.Random(seed + nodes)
        names = [f"node{i}" for i in range(1, nodes + 1) if f"node{i}" != master]
        changes = max(10, int(seconds))
        changed = rng.sample(names, min(changes, len(names)))
        latencies = {"/1/status": [], "/1/nodes": [], "errors": []}
        stop = threading.Event()
        sampling = threading.Thread(target=sampler, args=(api_port, stop, latencies))
        cpu0, wall0 = stats.cpu_seconds(), time.monotonic()
        sampling.start()
        control_api = Http(sim_port)
        changed_at = {}
        rss_max = stats.rss_kb()
        window_end = wall0 + seconds
        for i, node in enumerate(changed):
            # Spread over the window, at times unrelated to the nodes' poll slots.
            due = wall0 + (i + rng.random()) * seconds / len(changed)
            while time.monotonic() < due:
                rss_max = max(rss_max, stats.rss_kb())
                time.sleep(min(0.2, max(0.0, due - time.monotonic())))
            body = json.dumps({"status": "evacuate", "bench": i}).encode()
            at = time.time()
            status, answer = control_api.request("PUT", f"/sim/nodes/{node}/diagnose", body)
            if status != 200:
                raise RuntimeError(f"PUT diagnose of {node}: {status} {answer[:200]!r}")
            changed_at[node] = at
        while time.monotonic() < window_end:
            rss_max = max(rss_max, stats.rss_kb())
            time.sleep(0.2)
        cpu1, wall1 = stats.cpu_seconds(), time.monotonic()
        rss_max = max(rss_max, stats.rss_kb())
        # The last changes get a poll interval and a margin to show up.
        time.sleep(interval + 1.0)
        stop.set()
        sampling.join()

        incidents = api.json("/1/status")
        noted = {}
        for incident in incidents:
            node = incident["node"]
            if node in changed_at and node not in noted:
                noted[node] = incident["ctime"]
        detection = [noted[n] - changed_at[n] for n in changed_at if n in noted]
        missed = len(changed_at) - len(detection)

        reports = [n["last_report_at"] for n in api.json("/1/nodes") if n.get("last_report_at")]
        maintd_sweep = max(reports) - min(reports) if reports else None
        sequential, sequential_failures = sequential_sweep(
            sim_port, [f"node{i}" for i in range(1, nodes + 1)]
        )
        failures = failed_polls(api)
        return {
            "nodes": nodes,
            "instances": instances,
            "cpu": 100.0 * (cpu1 - cpu0) / (wall1 - wall0),
            "rss_kb": rss_max,
            "failures": failures,
            "changes": len(changed_at),
            "missed": missed,
            "detect_p50": percentile(detection, 0.50),
            "detect_p99": percentile(detection, 0.99),
            "status_p99": percentile(latencies["/1/status"], 0.99),
            "nodes_p99": percentile(latencies["/1/nodes"], 0.99),
            "api_errors": len(latencies["errors"]),
            "first_sweep": first_sweep,
            "maintd_sweep": maintd_sweep,
            "sequential_sweep": sequential,
            "sequential_failures": sequential_failures,
        }
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()


def fmt(value, pattern, scale=1.0):
    return "n/a" if value is None else pattern.format(value * scale)


def print_table(results, interval, seconds):
    loads = os.getloadavg()
    print()
    print(
        f"maintd polling, poll interval {interval:g} s, {seconds:g} s measured per size, "
        f"{os.cpu_count()} CPUs, load average {loads[0]:.2f} {loads[1]:.2f} {loads[2]:.2f}"
    )
    print()
    header = [
        "nodes / instances", "CPU (% core)", "RSS MB", "KB/node", "failed polls",
        "detect p50", "detect p99", "status p99", "nodes p99",
        "sweep: maintd", "sweep: sequential",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                f"{r['nodes']:,} / {r['instances']:,}",
                f"{r['cpu']:.1f}",
                f"{r['rss_kb'] / 1024:.0f}",
                f"{r['rss_kb'] / r['nodes']:.1f}",
                f"{r['failures']}",
                fmt(r["detect_p50"], "{:.2f} s"),
                fmt(r["detect_p99"], "{:.2f} s"),
                fmt(r["status_p99"], "{:.0f} ms", 1000),
                fmt(r["nodes_p99"], "{:.0f} ms", 1000),
                fmt(r["maintd_sweep"], "{:.2f} s"),
                fmt(r["sequential_sweep"], "{:.2f} s"),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print()
    for r in results:
        notes = []
        if r["missed"]:
            notes.append(f"{r['missed']} of {r['changes']} changes never noted")
        if r["api_errors"]:
            notes.append(f"{r['api_errors']} API requests failed")
        if r["sequential_failures"]:
            notes.append(f"{r['sequential_failures']} sequential fetches failed")
        notes.append(f"first sweep after start {r['first_sweep']:.1f} s")
        print(f"{r['nodes']:,} nodes: {r['changes']} report changes; " + "; ".join(notes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maintd", default=default_binary(), help="the release binary")
    parser.add_argument("--sizes", default="1000,5000", help="node counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time per size")
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval (s)")
    parser.add_argument("--warmup", type=float, default=15.0, help="wait after the first sweep (s)")
    parser.add_argument("--seed", type=int, default=1, help="choice of nodes and times")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if not os.access(args.maintd, os.X_OK):
        sys.exit(f"{args.maintd}: not found; build with `cargo build --release -p maintd-actors`")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = []
    for nodes in sizes:
        workdir = tempfile.mkdtemp(prefix=f"maintd-bench-poll-{nodes}-")
        print(f"{nodes} nodes: running ({workdir}) ...", file=sys.stderr, flush=True)
        try:
            result = run_size(
                args.maintd, nodes, args.seconds, args.interval, args.warmup, workdir, args.seed
            )
            print(f"{nodes} nodes: {json.dumps(result)}", file=sys.stderr, flush=True)
            results.append(result)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, args.interval, args.seconds)


if __name__ == "__main__":
    main()
