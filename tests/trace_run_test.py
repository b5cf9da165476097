"""Traces of a real world: the pipeline example (tp 2 x pp 2) with RANKMESH_TRACE, embedded and under
`rankmesh launch`; its files merged, reported on and drawn.

Checks: every rank wrote its file; the merged trace is monotone per lane; every message's flow has
both ends, each inside an operation, and the send's end precedes the receive's within twice the
recorded clock error bound; the trace holds every dict the pipeline says it sent and received; the
report and the picture come out (an arrow per message, a lane per rank). A third run delays rank 1's
TP all_reduces on purpose (--slow-rank 1): the report's entry skew for tp:0 names rank 1 as the
member that arrived last most often.

usage: trace_run_test.py PATH_TO_rankmesh PATH_TO_rankmesh-pipeline
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

RANKMESH, PIPELINE = sys.argv[1], sys.argv[2]
SVG = "{http://www.w3.org/2000/svg}"
failures = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(f"{name}: {detail}")


def traced_run(mode, directory, extra=()):
    env = dict(os.environ, RANKMESH_TRACE=directory)
    args = ["--tp", "2", "--pp", "2", "--microbatches", "4", *extra]
    command = [PIPELINE, *args] if mode == "embedded" else \
        [RANKMESH, "launch", "--nproc-per-node", "4", "--", PIPELINE, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


def check_world(mode, tmp):
    directory = os.path.join(tmp, mode)
    os.makedirs(directory)
    r = traced_run(mode, directory)
    check(f"{mode} run", r.returncode == 0, r.stderr[-2000:])
    run_lines = r.stdout.splitlines()
    names = sorted(os.listdir(directory))
    check(f"{mode} files", [n for n in names if n.endswith(".trace.json")] ==
          [f"rank-{rank}.trace.json" for rank in range(4)], names)

    merged_path = os.path.join(tmp, mode + ".json")
    r = subprocess.run([RANKMESH, "trace", "merge", directory, "-o", merged_path],
                       capture_output=True, text=True, timeout=60)
    check(f"{mode} merge", r.returncode == 0, r.stderr)
    if r.returncode != 0:
        return
    with open(merged_path) as f:
        merged = json.load(f)
    error = merged["otherData"]["clock_error_us"]
    events = [e for e in merged["traceEvents"] if e["ph"] != "M"]
    lanes = {}
    for e in events:
        lanes.setdefault((e["pid"], e["tid"]), []).append(e["ts"])
    check(f"{mode} monotone per lane", all(ts == sorted(ts) for ts in lanes.values()))

    sends = {e["id"]: e for e in events if e["ph"] == "s"}
    receives = {e["id"]: e for e in events if e["ph"] == "f"}
    check(f"{mode} flows pair", sends.keys() == receives.keys() and sends,
          sorted(set(sends) ^ set(receives)))
    for flow, send in sends.items():
        receive = receives.get(flow)
        if receive:
            check(f"{mode} send precedes receive {flow}", send["ts"] <= receive["ts"] + 2 * error,
                  f"send at {send['ts']}, receive at {receive['ts']}, error bound {error}")

    # The pipeline prints each rank's dict counts: the trace must hold every one.
    counted = {}
    for line in run_lines:
        match = re.search(r"rank (\d+): .*sent (\d+) dicts, received (\d+)", line)
        if match:
            counted[int(match.group(1))] = (int(match.group(2)), int(match.group(3)))
    for rank, (sent, received) in counted.items():
        ops = [e["name"] for e in events if e["ph"] == "X" and e["pid"] == rank]
        check(f"{mode} rank {rank} dicts", (ops.count("send_tensor_dict"), ops.count("recv_tensor_dict")) ==
              (sent, received), f"trace {ops.count('send_tensor_dict')}/{ops.count('recv_tensor_dict')}, "
              f"pipeline {sent}/{received}")
    check(f"{mode} counts printed", len(counted) == 4, counted)

    r = subprocess.run([RANKMESH, "trace", "report", merged_path], capture_output=True, text=True, timeout=60)
    check(f"{mode} report", r.returncode == 0 and "| tp:0 |" in r.stdout and "0>2" in r.stdout, r.stdout + r.stderr)
    check(f"{mode} report every flow in an operation",
          "messages left out" not in r.stdout and "have no other end" not in r.stdout, r.stdout)
    r = subprocess.run([RANKMESH, "trace", "svg", merged_path], capture_output=True, text=True, timeout=60)
    check(f"{mode} svg", r.returncode == 0, r.stderr)
    if r.returncode == 0:
        root = ET.fromstring(r.stdout.encode())
        ranks = {g.get("data-rank") for g in root.iter(SVG + "g") if g.get("class") == "lane"}
        arrows = [e for e in root.iter(SVG + "line") if e.get("class") == "flow"]
        check(f"{mode} svg lanes", ranks == {"0", "1", "2", "3"}, ranks)
        check(f"{mode} svg arrows", len(arrows) == len(sends), f"{len(arrows)} vs {len(sends)}")


def table_rows(report, heading):
    """The rows of the markdown table under `## heading`, as lists of cells."""
    section = report.split("## " + heading, 1)[-1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def check_delayed_rank(tmp):
    directory = os.path.join(tmp, "slow")
    os.makedirs(directory)
    r = traced_run("embedded", directory, ["--slow-rank", "1"])
    check("slow run", r.returncode == 0, r.stderr[-2000:])
    merged_path = os.path.join(tmp, "slow.json")
    r = subprocess.run([RANKMESH, "trace", "merge", directory, "-o", merged_path],
                       capture_output=True, text=True, timeout=60)
    check("slow merge", r.returncode == 0, r.stderr)
    r = subprocess.run([RANKMESH, "trace", "report", merged_path], capture_output=True, text=True, timeout=60)
    check("slow report", r.returncode == 0, r.stderr)
    skew = {row[0]: row for row in table_rows(r.stdout, "Collective entry skew")}
    # tp:0 is ranks 0 and 1: rank 1 starts each all_reduce 2 ms late.
    last = skew.get("tp:0", [""] * 5)[4]
    check("slow report names the delayed rank", last.startswith("rank 1 ("), skew.get("tp:0"))
    p50 = skew.get("tp:0", ["", "", "0 µs"])[2]
    check("slow report skew near the delay", p50.endswith(" ms") and float(p50.split()[0]) >= 1.5, p50)


with tempfile.TemporaryDirectory() as tmp:
    for mode in ("embedded", "launched"):
        check_world(mode, tmp)
    check_delayed_rank(tmp)

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("trace_run_test: all checks passed")
