"""`rankmesh trace merge|report|svg` on synthetic trace files written as docs/trace.md says.

The synthetic world (4 ranks, times below on the world's time line, in µs):
- tp:0 (all 4 ranks) runs 20 all_reduces; rank 2 enters each one 50 µs after rank 0, the others
  within 3 µs: the report must name rank 2 as the one that arrived last, 20 of 20 times, skew 50 µs.
- pp:0: 10 messages 0>1 whose receive is posted 30 µs before the send begins (wait 30 µs), and 10
  messages 1>0 whose send begins 5 µs before the receive (wait 0).
- rank 3 runs a broadcast on its stream thread (tid 1) too, and has a timeout failure.
Each rank's file holds its own clock (world time - clock_offset_us) and its events shuffled.

usage: trace_test.py PATH_TO_rankmesh
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

BINARY = sys.argv[1]
failures = []
WORLD = 4
OFFSETS = {0: 0.0, 1: 1000.0, 2: 0.0, 3: -500.0}  # clock_offset_us per rank
ERRORS = {0: 0.0, 1: 1.5, 2: 0.0, 3: 2.5}          # clock_error_us per rank
SVG = "{http://www.w3.org/2000/svg}"


def run(*args):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=60)


def check(name, condition, detail=""):
    if not condition:
        failures.append(f"{name}: {detail}")


def expect_usage_error(name, args, needle):
    r = run(*args)
    check(name, r.returncode == 2, f"exit {r.returncode}, want 2; stderr {r.stderr!r}")
    lines = r.stderr.splitlines()
    check(name, len(lines) == 1, f"want one stderr line, got {r.stderr!r}")
    check(name, needle in r.stderr, f"stderr {r.stderr!r} does not name {needle!r}")


def op(rank, name, cat, ts, dur, group, group_id, seq, peers, nbytes, tid=0, error=None):
    args = {"group": group, "group_id": group_id, "seq": seq, "bytes": nbytes, "peers": peers,
            "transport": "shm"}
    if error:
        args["error"] = error
    return {"ph": "X", "name": name, "cat": cat, "pid": rank, "tid": tid, "ts": ts, "dur": dur,
            "args": args}


def world_events():
    """Every rank's events on the world's time line."""
    events = {rank: [] for rank in range(WORLD)}
    tp, pp = 65536, 131072
    for seq in range(20):
        base = 1000.0 + 400.0 * seq
        for rank in range(WORLD):
            entry = base + (50.0 if rank == 2 else float(rank))
            events[rank].append(op(rank, "all_reduce", "collective", entry, base + 60.0 - entry,
                                   "tp:0", tp, seq, [r for r in range(WORLD) if r != rank], 8192))
    for seq in range(10):
        base = 20000.0 + 300.0 * seq
        # 0>1: the receive waits 30 µs for the send.
        events[1].append(op(1, "recv_tensor_dict", "p2p", base, 40.0, "pp:0", pp, seq, [0], 1024))
        events[0].append(op(0, "send_tensor_dict", "p2p", base + 30.0, 8.0, "pp:0", pp, seq, [1], 1024))
        flow = f"{pp}:0>1#{seq}"
        events[0].append({"ph": "s", "cat": "flow", "name": "message", "id": flow, "pid": 0, "tid": 0,
                          "ts": base + 31.0})
        events[1].append({"ph": "f", "bp": "e", "cat": "flow", "name": "message", "id": flow, "pid": 1,
                          "tid": 0, "ts": base + 39.0})
        # 1>0: the send begins 5 µs before the receive is posted.
        base += 150.0
        events[1].append(op(1, "send_tensor_dict", "p2p", base, 8.0, "pp:0", pp, seq, [0], 512))
        events[0].append(op(0, "recv_tensor_dict", "p2p", base + 5.0, 10.0, "pp:0", pp, seq, [1], 512))
        flow = f"{pp}:1>0#{seq}"
        events[1].append({"ph": "s", "cat": "flow", "name": "message", "id": flow, "pid": 1, "tid": 0,
                          "ts": base + 1.0})
        events[0].append({"ph": "f", "bp": "e", "cat": "flow", "name": "message", "id": flow, "pid": 0,
                          "tid": 0, "ts": base + 14.0})
    events[3].append(op(3, "broadcast", "collective", 9000.0, 25.0, "world:0", 1, 0, [0, 1, 2], 64,
                        tid=1, error="peer <2> & others gone"))
    events[3].append({"ph": "i", "s": "t", "cat": "failure", "name": "timeout", "pid": 3, "tid": 1,
                      "ts": 9025.0, "args": {"message": "rank 2 did not answer <in time> & so on"}})
    return events


def rank_file(rank, events, shuffle_seed):
    own = []
    for event in events:
        moved = dict(event)
        moved["ts"] = event["ts"] - OFFSETS[rank]
        own.append(moved)
    random.Random(shuffle_seed).shuffle(own)
    meta = [{"ph": "M", "name": "process_name", "pid": rank, "args": {"name": f"rank {rank}"}},
            {"ph": "M", "name": "process_sort_index", "pid": rank, "args": {"sort_index": rank}},
            {"ph": "M", "name": "thread_name", "pid": rank, "tid": 0, "args": {"name": "engine"}},
            {"ph": "M", "name": "thread_name", "pid": rank, "tid": 1, "args": {"name": "stream"}}]
    return {"displayTimeUnit": "ns",
            "otherData": {"rankmesh_trace": 1, "rank": rank, "world_size": WORLD, "host": "h",
                          "clock": "CLOCK_MONOTONIC", "clock_offset_us": OFFSETS[rank],
                          "clock_error_us": ERRORS[rank],
                          "clock_method": "ping-pong" if OFFSETS[rank] else "same host",
                          "recorded": len(events), "dropped": 0, "reason": "shutdown"},
            "traceEvents": meta + own}


def write_world(directory, events, skip=(), edit=None):
    os.makedirs(directory, exist_ok=True)
    for rank in range(WORLD):
        if rank in skip:
            continue
        document = rank_file(rank, events[rank], rank)
        if edit:
            document = edit(rank, document)
        with open(os.path.join(directory, f"rank-{rank}.trace.json"), "w") as f:
            json.dump(document, f)


def table_rows(report, heading):
    """The rows of the markdown table under `## heading`, as lists of cells."""
    section = report.split("## " + heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


events = world_events()
total_x = sum(1 for rank in events for e in events[rank] if e["ph"] == "X")
with tempfile.TemporaryDirectory() as tmp:
    good = os.path.join(tmp, "good")
    write_world(good, events)
    # A dump file beside the rank files is not merged.
    with open(os.path.join(good, "rank-0.dump-1.trace.json"), "w") as f:
        f.write("not json")
    merged_path = os.path.join(tmp, "run.json")

    # merge: offsets applied, every event kept, per-lane order, otherData.ranks, the error bound.
    r = run("trace", "merge", good, "-o", merged_path)
    check("merge exit", r.returncode == 0, r.stderr)
    with open(merged_path) as f:
        merged = json.load(f)
    got = merged["traceEvents"]
    want_count = sum(len(rank_file(rank, events[rank], 0)["traceEvents"]) for rank in range(WORLD))
    check("merge keeps every event", len(got) == want_count, f"{len(got)} vs {want_count}")
    timed = [e for e in got if e["ph"] != "M"]
    check("merge metadata first", all(e["ph"] == "M" for e in got[:len(got) - len(timed)]))
    world = sorted((e["pid"], e["ph"], e.get("name"), e["ts"]) for rank in events for e in events[rank])
    check("merge applies offsets", sorted((e["pid"], e["ph"], e.get("name"), e["ts"]) for e in timed) == world,
          "merged ts differ from the world's time line")
    lanes = {}
    for e in timed:
        lanes.setdefault((e["pid"], e["tid"]), []).append(e["ts"])
    check("merge per-lane order", all(ts == sorted(ts) for ts in lanes.values()), lanes.keys())
    other = merged["otherData"]
    check("merge ranks", [o["rank"] for o in other["ranks"]] == list(range(WORLD)), other["ranks"])
    check("merge ranks keep otherData", other["ranks"][1]["clock_method"] == "ping-pong", other["ranks"][1])
    check("merge error bound", other["clock_error_us"] == 2.5, other)
    check("merge version", other["rankmesh_trace"] == 1 and other["world_size"] == WORLD, other)
    r = run("trace", "merge", good)
    check("merge to stdout", r.returncode == 0 and json.loads(r.stdout) == merged, r.stderr)

    # merge: bad directories and files, one line each, naming the file.
    missing = os.path.join(tmp, "missing")
    write_world(missing, events, skip=(2,))
    expect_usage_error("merge missing rank", ["trace", "merge", missing], "rank-2.trace.json")
    r = run("trace", "merge", missing, "--partial")
    check("merge partial", r.returncode == 0 and json.loads(r.stdout)["otherData"]["missing_ranks"] == [2],
          r.stderr)
    os.makedirs(os.path.join(tmp, "empty"))
    expect_usage_error("merge empty dir", ["trace", "merge", os.path.join(tmp, "empty")],
                       "no rank-<R>.trace.json files")
    expect_usage_error("merge no dir", ["trace", "merge", os.path.join(tmp, "nowhere")], "not a directory")
    broken = os.path.join(tmp, "broken")
    write_world(broken, events)
    with open(os.path.join(broken, "rank-1.trace.json"), "w") as f:
        f.write('{"traceEvents": [')
    expect_usage_error("merge invalid json", ["trace", "merge", broken], "rank-1.trace.json: not valid JSON")

    def version_2(rank, document):
        if rank == 3:
            document["otherData"]["rankmesh_trace"] = 2
        return document
    write_world(os.path.join(tmp, "v2"), events, edit=version_2)
    expect_usage_error("merge unknown version", ["trace", "merge", os.path.join(tmp, "v2")],
                       "rank-3.trace.json: trace format version 2; this rankmesh reads version 1")

    def not_rankmesh(rank, document):
        del document["otherData"]
        return document
    write_world(os.path.join(tmp, "chrome"), events, edit=not_rankmesh)
    expect_usage_error("merge foreign trace", ["trace", "merge", os.path.join(tmp, "chrome")],
                       "not a rankmesh trace file")

    def no_ts(rank, document):
        del document["traceEvents"][5]["ts"]
        return document
    write_world(os.path.join(tmp, "nots"), events, edit=no_ts)
    expect_usage_error("merge event without ts", ["trace", "merge", os.path.join(tmp, "nots")],
                       "event 5 has no numeric 'ts'")

    def wrong_rank(rank, document):
        document["otherData"]["rank"] = 0
        return document
    write_world(os.path.join(tmp, "wrongrank"), events, edit=wrong_rank)
    expect_usage_error("merge rank disagrees with name", ["trace", "merge", os.path.join(tmp, "wrongrank")],
                       "otherData.rank is 0, the name says 1")

    # report: operations, skew naming the delayed rank, receiver waits, failures.
    report_path = os.path.join(tmp, "report.md")
    r = run("trace", "report", merged_path, "-o", report_path)
    check("report exit", r.returncode == 0, r.stderr)
    with open(report_path) as f:
        report = f.read()
    ops = {(row[0], row[1]): row for row in table_rows(report, "Operations")}
    check("report all_reduce row", ops.get(("tp:0", "all_reduce"), [])[2:5] == ["80", "0", "640 KiB"],
          ops.get(("tp:0", "all_reduce")))
    check("report failed op counted", ops.get(("world:0", "broadcast"), [])[2:4] == ["1", "1"],
          ops.get(("world:0", "broadcast")))
    skew = {row[0]: row for row in table_rows(report, "Collective entry skew")}
    check("report skew names the delayed rank", skew.get("tp:0", [""] * 5)[4] == "rank 2 (20 of 20)",
          skew.get("tp:0"))
    check("report skew figures", skew.get("tp:0", [""] * 5)[1:4] == ["20", "50 µs", "50 µs"], skew.get("tp:0"))
    check("report skew needs two ranks", "world:0" not in skew, skew)
    waits = {(row[0], row[1]): row for row in table_rows(report, "Point-to-point")}
    check("report wait 0>1", waits.get(("pp:0", "0>1"), [])[2:] == ["10", "10", "30 µs", "30 µs"],
          waits.get(("pp:0", "0>1")))
    check("report wait 1>0", waits.get(("pp:0", "1>0"), [])[2:] == ["10", "0", "0 µs", "0 µs"],
          waits.get(("pp:0", "1>0")))
    check("report failure listed", "rank 3 (stream): timeout: rank 2 did not answer" in report, report)
    check("report failed operation listed", "broadcast on world:0 (seq 0): peer <2> & others gone" in report,
          report)
    check("report error bound", "±2.5 µs" in report, report)
    r = run("trace", "report", os.path.join(good, "rank-0.trace.json"))
    check("report on one rank's file", r.returncode == 0 and "send_tensor_dict" in r.stdout, r.stderr)
    expect_usage_error("report missing file", ["trace", "report", os.path.join(tmp, "none.json")],
                       "none.json: cannot be read")

    # svg: well-formed, a lane per rank (two for rank 3), a rectangle per operation, an arrow per flow.
    svg_path = os.path.join(tmp, "timeline.svg")
    r = run("trace", "svg", merged_path, "-o", svg_path)
    check("svg exit", r.returncode == 0, r.stderr)
    root = ET.parse(svg_path).getroot()
    check("svg root", root.tag == SVG + "svg", root.tag)
    lanes = [(int(g.get("data-rank")), int(g.get("data-tid"))) for g in root.iter(SVG + "g")
             if g.get("class") == "lane"]
    check("svg lanes", lanes == [(0, 0), (1, 0), (2, 0), (3, 0), (3, 1)], lanes)
    labels = [t.text for t in root.iter(SVG + "text") if t.get("class") == "lane-label"]
    check("svg lane labels", labels == ["rank 0", "rank 1", "rank 2", "rank 3 engine", "rank 3 stream"], labels)
    rects = [e for e in root.iter(SVG + "rect") if e.get("class") == "op"]
    check("svg op per operation", len(rects) == total_x, f"{len(rects)} vs {total_x}")
    flows = [e for e in root.iter(SVG + "line") if e.get("class") == "flow"]
    check("svg arrow per flow", len(flows) == 20, len(flows))
    check("svg failure marked", sum(1 for e in root.iter(SVG + "path") if e.get("class") == "failure") == 1)
    texts = " ".join(t.text or "" for t in root.iter(SVG + "text"))
    check("svg legend", "all_reduce (collective)" in texts and "send_tensor_dict (p2p)" in texts, texts)
    check("svg axis", sum(1 for t in root.iter(SVG + "text") if t.get("class") == "tick") >= 4, texts)
    check("svg axis unit", "time since the trace's first event (ms)" in texts, texts)

    # A window, and a cap on what is drawn that the picture states.
    r = run("trace", "svg", merged_path, "--from", "19000", "--to", "23000")
    root = ET.fromstring(r.stdout.encode())
    rects = [e for e in root.iter(SVG + "rect") if e.get("class") == "op"]
    check("svg window", r.returncode == 0 and len(rects) == 40, len(rects))
    r = run("trace", "svg", merged_path, "--max-ops", "10")
    root = ET.fromstring(r.stdout.encode())
    rects = [e for e in root.iter(SVG + "rect") if e.get("class") == "op"]
    notes = [t.text for t in root.iter(SVG + "text") if t.get("class") == "note"]
    check("svg cap", len(rects) == 10 and notes and "first 10 of" in notes[0], (len(rects), notes))
    expect_usage_error("svg bad window", ["trace", "svg", merged_path, "--from", "5", "--to", "1"],
                       "--to must be after --from")
    expect_usage_error("svg bad number", ["trace", "svg", merged_path, "--from", "x"], "--from must be")
    expect_usage_error("trace unknown verb", ["trace", "draw", merged_path], "unknown trace command 'draw'")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("trace_test: all checks passed")
