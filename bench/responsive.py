#!/usr/bin/env python3
"""Benchmark: maintd stays responsive while it plans.

Not a test: it measures, on the release build, one command:

    python3 bench/responsive.py [--nodes 1000] [--instances 20000] [--seconds 60]

It starts `maintd sim --cluster-only` (a generated cluster, --seed 1) and `maintd daemon`
against it with balancing on (MAINTD__PLANNER__BALANCE=true) and a short round delay,
all on 127.0.0.1, then

* asks `GET /1/status` every 50 ms for --seconds and reports the answer times
  (p50, p99, max; a request unanswered after 30 s counts as 30 s and as a timeout);
* counts the rounds submitted and, from the daemon's log, the time from each round's
  start to its submission ("submitting round", field `seconds`) and the plan times
  ("planning a round" to "round planned");
* half-way, makes a node report `evacuate` (the simulator's control API) and measures,
  from the incident's history (`GET /1/incidents/UUID`), the time from the incident
  becoming actionable (`confirmed`) to its first job (`job-submitted`), round delay
  excluded: from the later of the confirmation and the start of the round that
  submitted the job (that round's start from the log);
* sends SIGTERM in the middle of a plan and times the exit.

It prints a markdown table with the bar of issue 14 beside each figure. Run it on an
otherwise idle machine if you can; `uptime` is printed with the results.

Usage: bench/responsive.py [--maintd PATH] [--no-build] [--nodes N] [--instances N]
                           [--seed S] [--seconds S] [--round-delay S] [--job-seconds S]
                           [--keep DIR]
"""

import argparse
import datetime
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
REQUEST_TIMEOUT = 30.0
SAMPLE_INTERVAL = 0.05


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maintd", help="the maintd binary (default: build the release one)")
    p.add_argument("--no-build", action="store_true",
                   help="do not run cargo build first")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--instances", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=60.0,
                   help="how long to sample /1/status")
    p.add_argument("--round-delay", type=float, default=1.0)
    p.add_argument("--job-seconds", type=float, default=0.5,
                   help="how long each simulated job runs")
    p.add_argument("--keep", help="keep the logs and state in this directory")
    return p.parse_args()


def binary(args):
    if args.maintd:
        return args.maintd
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    path = os.path.join(target, "release", "maintd")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--package",
                        "maintd-actors", "--bin", "maintd"], cwd=REPO, check=True)
    if not os.access(path, os.X_OK):
        sys.exit("%s missing: cargo build --release -p maintd-actors" % path)
    return path


class Child:
    """A maintd process: stdout read line by line on a thread, stderr to a file."""

    def __init__(self, name, cmd, env, log_path):
        self.name = name
        self.log_path = log_path
        self.lines = []
        self.lock = threading.Condition()
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=log, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))
                self.lock.notify_all()

    def line(self, label, timeout=120.0):
        """What follows `label` on the first stdout line containing it."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for line in self.lines:
                    if label in line:
                        return line.split(label, 1)[1].strip()
                if self.proc.poll() is not None:
                    sys.exit("%s exited (%s) before printing %r; log: %s"
                             % (self.name, self.proc.returncode, label, self.log_path))
                left = deadline - time.monotonic()
                if left <= 0:
                    sys.exit("%s did not print %r in %.0f s" % (self.name, label, timeout))
                self.lock.wait(min(left, 0.5))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def address(url):
    rest = url.split("://", 1)[-1]
    host, port = rest.split("/", 1)[0].rsplit(":", 1)
    if host not in (HOST, "localhost"):
        sys.exit("not a loopback address: %s" % url)
    return HOST, int(port)


def request(addr, method, path, body=None, timeout=REQUEST_TIMEOUT):
    """(status, body text, seconds); status None when no answer came."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        return resp.status, text, time.perf_counter() - started
    except (OSError, http.client.HTTPException):
        return None, "", time.perf_counter() - started
    finally:
        conn.close()


def get_json(addr, path):
    status, text, _ = request(addr, "GET", path)
    if status != 200:
        return None
    return json.loads(text)


def wait_for(what, timeout, check, every=0.2):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            sys.exit("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(every)


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def log_records(path):
    """The daemon's JSON log lines: (time, message, fields)."""
    records = []
    with open(path) as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            fields = record.get("fields", {})
            stamp = record.get("timestamp", "").replace("Z", "+00:00")
            try:
                when = datetime.datetime.fromisoformat(stamp).timestamp()
            except ValueError:
                continue
            records.append((when, fields.get("message", ""), fields))
    return records


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def fmt_ms(seconds):
    if seconds is None:
        return "–"
    if seconds >= 1:
        return "%.2f s" % seconds
    return "%.1f ms" % (seconds * 1e3)


def main():
    args = parse_args()
    maintd = binary(args)
    work = args.keep or tempfile.mkdtemp(prefix="maintd-responsive-")
    os.makedirs(work, exist_ok=True)
    users = os.path.join(work, "api-users")
    with open(users, "w") as fh:
        fh.write("reader reader-secret read\n")
    env = dict(os.environ)
    env.update({
        "RUST_LOG": "info,maintd::planner=debug",
        # Nothing of this machine's Ganeti, if any: no HMAC key, no ssconf.
        "MAINTD__CLUSTER__HMAC_KEY": "",
        "MAINTD__CLUSTER__SSCONF_DIR": os.path.join(work, "no-ssconf"),
        "MAINTD__API__SSL": "false",
        "MAINTD__API__USERS_FILE": users,
    })
    sim = daemon = None
    try:
        print("starting maintd sim --cluster-only --nodes %d --instances %d --seed %d ..."
              % (args.nodes, args.instances, args.seed), file=sys.stderr)
        sim = Child("sim", [
            maintd, "sim", "--cluster-only", "--nodes", str(args.nodes),
            "--instances", str(args.instances), "--seed", str(args.seed),
            "--job-seconds", str(args.job_seconds), "--sim-listen", HOST + ":0",
            "--luxi-socket", os.path.join(work, "luxi.sock"),
            "--state-dir", os.path.join(work, "sim")], env,
            os.path.join(work, "sim.log"))
        control = address(sim.line("control API:"))
        diagnose_url = sim.line("diagnose URL:")
        daemon_env = dict(env, MAINTD__PLANNER__BALANCE="true")
        daemon = Child("daemon", [
            maintd, "daemon", "-f", "--log-format", "json",
            "--luxi-socket", os.path.join(work, "luxi.sock"),
            "--diagnose-url", diagnose_url, "--node-name", "node1",
            "--state-dir", os.path.join(work, "state"), "-b", HOST, "-p", "0",
            "--round-delay", str(args.round_delay), "--poll-interval", "5"],
            daemon_env, os.path.join(work, "daemon.log"))
        api = address(daemon.line("maintd API:"))
        wait_for("the daemon to serve /1/status", 120,
                 lambda: True if request(api, "GET", "/1/status", timeout=60)[0] == 200
                 else None)
        print("sampling /1/status every %.0f ms for %.0f s ..."
              % (SAMPLE_INTERVAL * 1e3, args.seconds), file=sys.stderr)

        samples = []
        failures = [0]
        done = threading.Event()

        def sample():
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < args.seconds:
                status, _, took = request(api, "GET", "/1/status")
                if status != 200:
                    failures[0] += 1
                    took = max(took, REQUEST_TIMEOUT) if status is None else took
                samples.append(took)
                n += 1
                pause = start + n * SAMPLE_INTERVAL - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            done.set()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # Half-way, an evacuation: a node that is not the master.
        time.sleep(args.seconds / 2)
        node = "node%d" % max(2, args.nodes // 2)
        status, text, _ = request(control, "PUT", "/sim/nodes/%s/diagnose" % node,
                                  body=json.dumps({"status": "evacuate"}))
        if status != 200:
            sys.exit("cannot make %s report evacuate: %s %s" % (node, status, text))
        reported = time.time()
        sampler.join()

        def incident_uuid():
            for incident in get_json(api, "/1/status") or []:
                if incident.get("node") == node:
                    return incident["uuid"]
            return None

        uuid = wait_for("the incident on %s" % node, 60, incident_uuid)

        def first_job():
            detail = get_json(api, "/1/incidents/%s" % uuid) or {}
            history = detail.get("history", [])
            times = {}
            for entry in history:
                times.setdefault(entry["event"], entry["time"])
            if "job-submitted" in times and "confirmed" in times:
                return times
            return None

        times = wait_for("the evacuation's first job", 300, first_job)
        metrics_text = request(api, "GET", "/metrics")[1]

        # SIGTERM in the middle of a plan, if one comes within two minutes.
        deadline = time.monotonic() + 120
        while not plan_in_progress(daemon.log_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        plan_running = plan_in_progress(daemon.log_path)
        sent = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            code = daemon.proc.wait(timeout=60)
            stop_seconds = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            code, stop_seconds = None, None
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

        records = log_records(daemon.log_path)
        rounds = [(when, f) for when, msg, f in records if msg == "submitting round"]
        round_seconds = [f.get("seconds") for _, f in rounds if f.get("seconds") is not None]
        plans = plan_times(records)
        # The round that submitted the incident's first job: the last submission logged
        # before the job was recorded.
        submitted = times["job-submitted"]
        confirmed = times["confirmed"]
        starts = [when - f.get("seconds", 0.0) for when, f in rounds if when <= submitted + 0.5]
        round_start = max(starts) if starts else None
        actionable = max(confirmed, round_start) if round_start is not None else confirmed
        incident_latency = submitted - actionable

        report(args, load, samples, failures[0], rounds, round_seconds, plans,
               metrics_text, incident_latency, submitted - confirmed, confirmed - reported,
               stop_seconds, code, plan_running)
        print("logs: %s" % work, file=sys.stderr)
    finally:
        for child in (daemon, sim):
            if child is not None:
                child.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def plan_in_progress(log_path):
    """Whether the daemon's last "planning a round" has no "round planned" yet."""
    state = False
    with open(log_path) as fh:
        for line in fh:
            if '"planning a round"' in line:
                state = True
            elif '"round planned"' in line:
                state = False
    return state


def plan_times(records):
    """Seconds from each "planning a round" to the "round planned" after it."""
    times = []
    started = None
    for when, msg, _ in records:
        if msg == "planning a round":
            started = when
        elif msg == "round planned" and started is not None:
            times.append(when - started)
            started = None
    return times


def report(args, load, samples, failures, rounds, round_seconds, plans, metrics_text,
           incident_latency, incident_raw, detection, stop_seconds, code, plan_running):
    def row(what, value, bar, ok):
        verdict = "" if ok is None else ("yes" if ok else "**no**")
        print("| %s | %s | %s | %s |" % (what, value, bar, verdict))

    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    worst = max(samples) if samples else None
    plan_count = metric(metrics_text, "maintd_plan_duration_seconds_count")
    plan_sum = metric(metrics_text, "maintd_plan_duration_seconds_sum")
    print()
    print("maintd responsiveness, %d nodes / %d instances (seed %d), balancing on, "
          "round delay %.1f s, jobs of %.1f s" % (args.nodes, args.instances, args.seed,
                                                  args.round_delay, args.job_seconds))
    print("machine: %d cores; %s" % (os.cpu_count() or 0, load))
    print()
    print("| measure | value | bar | met |")
    print("|---|---|---|---|")
    row("`/1/status` p50 / p99 / max (%d requests, %d failed)" % (len(samples), failures),
        "%s / %s / %s" % (fmt_ms(p50), fmt_ms(p99), fmt_ms(worst)), "p99 ≤ 50 ms",
        p99 is not None and p99 <= 0.05 and failures == 0)
    row("rounds submitted", str(len(rounds)), "≥ 1", len(rounds) >= 1)
    if round_seconds:
        row("round start → submission, median / max",
            "%s / %s" % (fmt_ms(statistics.median(round_seconds)), fmt_ms(max(round_seconds))),
            "≤ 1 s", max(round_seconds) <= 1.0)
    if plans:
        row("plan (first job set), median / max over %d plans" % len(plans),
            "%s / %s" % (fmt_ms(statistics.median(plans)), fmt_ms(max(plans))), "", None)
    if plan_count:
        row("plan time, mean (maintd_plan_duration_seconds)",
            fmt_ms(plan_sum / plan_count), "", None)
    row("evacuate: report → confirmed (polling, 5 s interval)", fmt_ms(detection), "", None)
    row("evacuate: actionable → first job, round delay excluded", fmt_ms(incident_latency),
        "≤ 100 ms", incident_latency <= 0.1)
    row("evacuate: confirmed → first job, as it came", fmt_ms(incident_raw), "", None)
    row("SIGTERM → exit%s" % (" (mid-plan)" if plan_running else ""),
        "%s, status %s" % (fmt_ms(stop_seconds), code), "≤ 5 s, status 0",
        stop_seconds is not None and stop_seconds <= 5 and code == 0)


if __name__ == "__main__":
    main()
