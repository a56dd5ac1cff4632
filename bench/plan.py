#!/usr/bin/env python3
"""Benchmark `maintd plan --balance` against Debian's `hbal`.

Not a test: it measures. For each generated cluster (the gen_cluster example of the
maintd crate, same seed for both
programs) it runs, one process at a time so that they never compete for a core:

* hbal -t FILE -C [-l N]                        (when hbal runs at that size)
* maintd plan --text FILE --balance [--max-steps N] --json   (same step limit)
* maintd plan --text FILE --balance --json      (the full balance, if hbal was limited)
* maintd plan --text FILE --balance --json --threads 1   (the same full balance on one
  thread: the sequential scan, for the side-by-side ratio; the steps must be the same)

each under `/usr/bin/time -v` (peak resident memory; wall time is measured by this
script, and runs under a second are repeated without the wrapper, best of 5), and
prints a markdown table:
steps, time per step, the per-step time ratio hbal/maintd, full-balance time on one
thread and on every core (and their ratio) and peak memory, plus whether both programs
took the same steps.

hbal's time per step is its whole run divided by its steps (its loading is negligible
at these sizes); maintd's is (run - run with --max-steps 0) / steps, i.e. without
loading and the initial score, which the table shows separately. A full balance that
exceeds --full-timeout is stopped and reported with the steps it had done.

A second table compares node evacuation with Debian's `hail` (node-evacuate of
node-0002, the request written by gen_cluster): hail's time, `maintd plan --evacuate`'s
time, their ratio, and whether both moved the same instances to the same nodes and
failed the same ones.

Usage: bench/plan.sh [--quick] [--sizes 10/200,20/400,...] [--hbal-max-nodes N]
                     [--seed S] [--full-timeout SECONDS] [--maintd PATH]
                     [--evac-sizes 50/1000/all,1000/20000/primary,...]
"""

import argparse
import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import signal
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The cluster generator: the domain crate's gen_cluster example, built by plan.sh.
GEN = os.environ.get("GEN_CLUSTER", os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")),
    "release", "examples", "gen_cluster"))
HTOOLS_DIRS = ["/usr/lib/ganeti/3.0/usr/bin", "/usr/lib/ganeti/iallocators"]
# (nodes, instances, evacuation mode): hail's ChangeAll tries every pair of nodes, so
# mode "all" stays at small sizes.
DEFAULT_EVAC = [(50, 1000, "all"), (200, 4000, "primary"), (200, 4000, "secondary"),
                (1000, 20000, "primary"), (1000, 20000, "secondary")]
QUICK_EVAC = [(50, 1000, "all"), (200, 4000, "primary"), (200, 4000, "secondary")]

# (nodes, instances, hbal step limit or None for a full balance)
DEFAULT_SIZES = [(10, 200, None), (20, 400, None), (50, 1000, 3),
                 (200, 4000, 1), (1000, 20000, 1)]
QUICK_SIZES = [(10, 200, None), (20, 400, 10), (50, 1000, 1), (200, 4000, 1)]
STEP_LINE = re.compile(r"^\s*\d+\.\s+\S+\s+\S+\s+=>\s+\S+\s+[0-9.]+\s+a=")


def find_tool(name):
    found = shutil.which(name) or next(
        (os.path.join(d, name) for d in HTOOLS_DIRS
         if os.access(os.path.join(d, name), os.X_OK)), None)
    if not found:
        # ganeti-htools-3.0 alone ships hail only inside the `htools` binary, which
        # takes its part from the name it is called by.
        multi = next((os.path.join(d, "htools") for d in HTOOLS_DIRS
                      if os.access(os.path.join(d, "htools"), os.X_OK)), None)
        if multi:
            link_dir = tempfile.mkdtemp(prefix="maintd-bench-htools-")
            atexit.register(shutil.rmtree, link_dir, True)
            found = os.path.join(link_dir, name)
            os.symlink(multi, found)
    if not found:
        sys.exit("%s not found: apt-get install -y --no-install-recommends "
                 "ganeti-htools-3.0" % name)
    return found


def timed(cmd, stdout_path, repeat_below=0.0, timeout=None):
    """Runs cmd; returns (wall seconds, peak RSS MiB, finished) and leaves its stdout in
    stdout_path (stderr in stdout_path + ".err").

    The first run is under `/usr/bin/time -v`, for its "Maximum resident set size". If it
    took less than `repeat_below` seconds, the wall time is taken from 5 more runs without
    the wrapper (best of 5), so that short runs are not dominated by noise. A run still
    going after `timeout` seconds is killed (finished = False; peak RSS unknown).
    """
    stats = stdout_path + ".time"

    def run(wrapped):
        prefix = ["/usr/bin/time", "-v", "-o", stats] if wrapped else []
        with open(stdout_path, "w") as out, open(stdout_path + ".err", "w") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(prefix + cmd, stdout=out, stderr=err,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return time.perf_counter() - start, False
            elapsed = time.perf_counter() - start
        if rc != 0:
            with open(stdout_path + ".err") as err:
                sys.exit("%s failed (%d):\n%s" % (" ".join(cmd), rc, err.read()[-2000:]))
        return elapsed, True

    elapsed, finished = run(True)
    if not finished:
        return elapsed, None, False
    with open(stats) as fh:
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", fh.read())
    if elapsed < repeat_below:
        elapsed = min(run(False)[0] for _ in range(5))
    return elapsed, int(rss.group(1)) / 1024.0, True


def progress_steps(stderr_path):
    """The last step count of maintd's progress lines ("maintd plan: N steps in ...")."""
    steps = 0
    with open(stderr_path) as fh:
        for line in fh:
            m = re.match(r"maintd plan: (\d+) steps in", line)
            if m:
                steps = int(m.group(1))
    return steps


def hbal_steps(path):
    with open(path) as fh:
        steps = []
        for line in fh:
            if STEP_LINE.match(line):
                words = line.split()
                steps.append((words[1], words[4], words[5]))
        return steps


def maintd_steps(path):
    with open(path) as fh:
        plan = json.load(fh)
    return [(s["instance"],
             s["primary"] + (":" + s["secondary"] if s.get("secondary") else ""),
             "%.8f" % s["score"]) for s in plan["steps"]]


def fmt_time(seconds, steps=None):
    if seconds is None:
        return "–"
    value = seconds if steps is None else seconds / max(steps, 1)
    if value >= 1:
        return "%.2f s" % value
    if value >= 1e-3:
        return "%.1f ms" % (value * 1e3)
    return "%.0f µs" % (value * 1e6)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smaller hbal runs (about 3 minutes instead of 15)")
    p.add_argument("--sizes", help="comma-separated NODES/INSTANCES[/HBAL_STEPS]")
    p.add_argument("--hbal-max-nodes", type=int, default=50,
                   help="run hbal only up to this many nodes (hbal needs ~5 min "
                        "per step at 200/4000) [50]")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--full-timeout", type=int, default=300,
                   help="stop a maintd full balance after this many seconds [300]")
    p.add_argument("--maintd", default=os.path.join(REPO, "target", "release", "maintd"))
    p.add_argument("--evac-sizes",
                   help="comma-separated NODES/INSTANCES/MODE for the hail comparison "
                        "(MODE: primary, secondary or all); empty: none")
    args = p.parse_args()

    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    if args.sizes:
        sizes = []
        for item in args.sizes.split(","):
            parts = [int(x) for x in item.split("/")]
            sizes.append((parts[0], parts[1], parts[2] if len(parts) > 2 else None))
    if not os.access("/usr/bin/time", os.X_OK):
        sys.exit("/usr/bin/time missing: apt-get install -y time")
    hbal = find_tool("hbal") if any(n <= args.hbal_max_nodes for n, _, _ in sizes) else None

    rows = []
    with tempfile.TemporaryDirectory(prefix="maintd-bench-") as tmp:
        for nodes, instances, limit in sizes:
            name = "%d/%d" % (nodes, instances)
            cluster = os.path.join(tmp, "c%d.txt" % nodes)
            subprocess.check_call([GEN, "--nodes", str(nodes),
                                   "--instances", str(instances), "--seed",
                                   str(args.seed), "-o", cluster],
                                  stderr=subprocess.DEVNULL)
            row = {"cluster": name, "limit": limit}
            if hbal and nodes <= args.hbal_max_nodes:
                sys.stderr.write("%s: hbal%s ...\n" % (name, " -l %d" % limit if limit else ""))
                out = cluster + ".hbal"
                cmd = [hbal, "-t", cluster, "-C"] + (["-l", str(limit)] if limit else [])
                row["hbal_time"], row["hbal_rss"], _ = timed(cmd, out)
                row["hbal_steps"] = hbal_steps(out)
            base = [args.maintd, "plan", "--text", cluster, "--balance", "--json"]
            out = cluster + ".maintd"
            # loading and scoring only: subtracted from the per-step time
            sys.stderr.write("%s: maintd plan --max-steps 0 ...\n" % name)
            row["m_load"], _, _ = timed(base + ["--max-steps", "0"], out + ".load",
                                        repeat_below=1.0)
            # hbal's step limit: the per-step comparison on the same steps
            sys.stderr.write("%s: maintd plan%s ...\n" % (
                name, " --max-steps %d" % limit if limit else ""))
            limited = base + (["--max-steps", str(limit)] if limit else [])
            row["m_time"], row["m_rss"], _ = timed(limited, out, repeat_below=1.0)
            row["m_steps"] = maintd_steps(out)
            if limit:
                sys.stderr.write("%s: maintd plan (full balance, at most %d s) ...\n" % (
                    name, args.full_timeout))
                full = out + ".full"
                (row["full_time"], row["full_rss"],
                 row["full_done"]) = timed(base, full, repeat_below=1.0,
                                           timeout=args.full_timeout)
                row["full_steps"] = (len(maintd_steps(full)) if row["full_done"]
                                     else progress_steps(full + ".err"))
            else:
                row["full_time"], row["full_rss"] = row["m_time"], row["m_rss"]
                row["full_done"], row["full_steps"] = True, len(row["m_steps"])
                full = out
            # the same full balance on one thread: the sequential scan
            sys.stderr.write("%s: maintd plan --threads 1 (full balance, at most %d s) ...\n"
                             % (name, args.full_timeout))
            seq = out + ".seq"
            (row["seq_time"], row["seq_rss"],
             row["seq_done"]) = timed(base + ["--threads", "1"], seq, repeat_below=1.0,
                                      timeout=args.full_timeout)
            row["seq_same"] = (row["seq_done"] and row["full_done"]
                               and maintd_steps(seq) == maintd_steps(full))
            rows.append(row)

    print("| cluster | hbal steps | hbal time/step | hbal peak RSS | maintd load "
          "| maintd time/step | ratio/step | same steps | maintd full balance "
          "| same on 1 thread | 1 thread / all cores | maintd peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m_steps = len(r["m_steps"])
        m_per = max(r["m_time"] - r["m_load"], 0.0) / max(m_steps, 1)
        if "hbal_time" in r:
            h_steps = len(r["hbal_steps"])
            h_per = r["hbal_time"] / max(h_steps, 1)
            ratio = "%.0f×" % (h_per / m_per) if m_per > 0 else "∞"
            same = "yes" if r["hbal_steps"] == r["m_steps"] else (
                "NO (%d vs %d steps)" % (h_steps, m_steps))
            hbal_cols = ["%d%s" % (h_steps, " (-l %d)" % r["limit"] if r["limit"] else ""),
                         fmt_time(h_per), "%.0f MiB" % r["hbal_rss"]]
        else:
            hbal_cols, ratio, same = ["not run", "–", "–"], "–", "–"
        if r["full_done"]:
            full = "%d steps in %s" % (r["full_steps"], fmt_time(r["full_time"]))
        else:
            full = "stopped after %s (%d steps)" % (fmt_time(r["full_time"]),
                                                   r["full_steps"])
        if r["seq_done"]:
            seq = "%s / %s = %.2f×" % (fmt_time(r["seq_time"]), fmt_time(r["full_time"]),
                                      r["seq_time"] / r["full_time"])
        else:
            seq = "stopped after %s" % fmt_time(r["seq_time"])
        rss = max(x for x in (r["m_rss"], r["full_rss"], r["seq_rss"]) if x is not None)
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f MiB |" % (
            r["cluster"], *hbal_cols, fmt_time(r["m_load"]), fmt_time(m_per), ratio,
            same, full, "yes" if r["seq_same"] else "NO", seq, rss))
    print()
    print("gen_cluster --seed %d; one process at a time on %d cores; hbal time/step = "
          "run / steps; maintd time/step = (run - run with --max-steps 0) / steps; "
          "ratio/step = hbal time/step / maintd time/step." % (
              args.seed, os.cpu_count() or 0))
    # The balancing table is out before the evacuations start: they take long.
    sys.stdout.flush()
    evac_sizes = QUICK_EVAC if args.quick else DEFAULT_EVAC
    if args.evac_sizes is not None:
        evac_sizes = [(int(n), int(i), m) for n, i, m in
                      (item.split("/") for item in args.evac_sizes.split(",") if item)]
    if evac_sizes:
        with tempfile.TemporaryDirectory(prefix="maintd-bench-") as tmp:
            evac_rows = [evacuation(args, tmp, *size) for size in evac_sizes]
        print()
        print_evacuations(evac_rows)


def evacuation(args, tmp, nodes, instances, mode):
    """hail and maintd evacuating node-0002 of one generated cluster, one at a time."""
    name = "%d/%d %s" % (nodes, instances, mode)
    cluster = os.path.join(tmp, "e%d-%d.txt" % (nodes, instances))
    request = os.path.join(tmp, "e%d-%d-%s.json" % (nodes, instances, mode))
    subprocess.check_call([GEN, "--nodes", str(nodes), "--instances", str(instances),
                           "--seed", str(args.seed), "-o", cluster,
                           "--evac-request", request, "--evac-node", "node-0002",
                           "--evac-mode", mode], stderr=subprocess.DEVNULL)
    sys.stderr.write("%s: hail node-evacuate ...\n" % name)
    hail_out = request + ".hail"
    hail_time, hail_rss, _ = timed([find_tool("hail"), "-t", cluster, request], hail_out,
                                   repeat_below=1.0)
    sys.stderr.write("%s: maintd plan --evacuate ...\n" % name)
    m_out = request + ".maintd"
    m_time, m_rss, _ = timed([args.maintd, "plan", "--text", cluster, "--evacuate",
                              "node-0002", "--mode", mode, "--json"], m_out,
                             repeat_below=1.0)
    with open(hail_out) as fh:
        moved, failed, _ = json.load(fh)["result"]
    with open(m_out) as fh:
        mine = json.load(fh)
    same = (moved == mine["moved"]
            and [f[0] for f in failed] == [f[0] for f in mine["failed"]])
    return {"cluster": name, "moved": len(moved), "hail_time": hail_time,
            "hail_rss": hail_rss, "m_time": m_time, "m_rss": m_rss, "same": same}


def print_evacuations(rows):
    print("| cluster, mode | instances moved | hail | maintd | ratio | same moves "
          "| peak RSS hail / maintd |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %s | %s | %.0f× | %s | %.0f / %.0f MiB |" % (
            r["cluster"], r["moved"], fmt_time(r["hail_time"]), fmt_time(r["m_time"]),
            r["hail_time"] / max(r["m_time"], 1e-9), "yes" if r["same"] else "NO",
            r["hail_rss"], r["m_rss"]))
    print()
    print("node-0002 evacuated by hail -t FILE REQUEST and maintd plan --text FILE "
          "--evacuate node-0002 --mode MODE --json; same moves: the same instances moved "
          "to the same nodes, in the same order, and the same ones failed.")


if __name__ == "__main__":
    main()
