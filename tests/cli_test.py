"""`rankmesh layout` as a user meets it: output formats, exit codes and one-line errors.

usage: cli_test.py PATH_TO_rankmesh DATA_DIR
"""
import json
import os
import subprocess
import sys

BINARY, DATA = sys.argv[1], sys.argv[2]
failures = []


def run(*args):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=30)


def check(name, condition, detail=""):
    if not condition:
        failures.append(f"{name}: {detail}")


def expect_usage_error(name, args, needle):
    r = run(*args)
    check(name, r.returncode == 2, f"exit {r.returncode}, want 2")
    check(name, r.stdout == "", f"stdout not empty: {r.stdout!r}")
    lines = r.stderr.splitlines()
    check(name, len(lines) == 1, f"want one stderr line, got {r.stderr!r}")
    check(name, needle in r.stderr, f"stderr {r.stderr!r} does not name {needle!r}")


# --json prints exactly one JSON object with the schema's keys in order.
r = run("layout", "--world-size", "8", "--tp", "2", "--pp", "4", "--json")
check("json exit", r.returncode == 0, r.stderr)
doc = json.loads(r.stdout)
check("json keys", list(doc) == ["world_size", "tp", "dcp", "pcp", "pp", "dp", "ep"], list(doc))
check("json tp", doc["tp"] == [[0, 1], [2, 3], [4, 5], [6, 7]], doc["tp"])
check("json pp", doc["pp"] == [[0, 2, 4, 6], [1, 3, 5, 7]], doc["pp"])
check("json one line", r.stdout.count("\n") == 1, r.stdout)

# The supernode defaults (8 devices per node, 2 nodes per TP group) give the vendor's table.
r = run("layout", "--world-size", "16", "--tp", "8", "--pp", "2", "--placement", "supernode", "--json")
doc = json.loads(r.stdout)
check("supernode tp", doc["tp"] == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]], doc["tp"])
check("supernode pp", doc["pp"] == [[0, 4], [1, 5], [2, 6], [3, 7], [8, 12], [9, 13], [10, 14], [11, 15]], doc["pp"])
# Groups are listed by first member, as the table lists them: DP singletons 0 .. 15.
check("supernode dp", doc["dp"] == [[r] for r in range(16)], doc["dp"])
check("supernode ep", doc["ep"] == doc["tp"], doc["ep"])

# The table has one row per rank with its coordinates, then the groups.
r = run("layout", "--world-size", "8", "--tp", "2", "--pp", "2", "--dp", "2")
check("table exit", r.returncode == 0, r.stderr)
rows = [l.split() for l in r.stdout.splitlines() if l.split() and l.split()[0].isdigit()]
check("table rows", [int(row[0]) for row in rows] == list(range(8)), r.stdout)
# rank 5 = (dp 1, pp 0, tp 1): tp group 2 index 1; pp groups run over (d, t): group 3 index 0;
# dp groups run over (t, p): group 2 index 1.
check("table rank 5", rows[5][1] == "2/1" and rows[5][4] == "3/0" and rows[5][5] == "2/1", rows[5])
check("table groups", "pp:1 [1, 3]" in r.stdout and "dp:0 [0, 4]" in r.stdout, r.stdout)

# --groups reads the explicit schema, implies explicit placement, and must agree with sizes.
# The file is not the contiguous layout and lists groups and members in its own order, so the
# output can only match it if the file was read and kept as written.
good = os.path.join(DATA, "groups_8_own_order.json")
with open(good) as f:
    want = json.load(f)
r = run("layout", "--groups", good, "--json")
check("explicit exit", r.returncode == 0, r.stderr)
check("explicit round trip", r.stdout.count("\n") == 1 and json.loads(r.stdout) == want, r.stdout)
r = run("layout", "--groups", good, "--tp", "2", "--world-size", "8", "--json")
check("explicit agreeing sizes", r.returncode == 0, r.stderr)
check("explicit agreeing sizes output", r.stdout.strip() and json.loads(r.stdout) == want, r.stdout)
r = run("layout", "--groups", good)
check("explicit table exit", r.returncode == 0, r.stderr)
lines = r.stdout.splitlines()
check("explicit table header",
      lines[:1] == ["world 8: tp 2, pp 4, dp 1, dcp 1, pcp 1, external dp 1, ep 2; placement explicit"],
      lines[:1])
rows = {int(l.split()[0]): l.split()[1:] for l in lines if l.split() and l.split()[0].isdigit()}
# Columns tp, dcp, pcp, pp, dp, ep; each cell group/rank-in-group in the file's order.
check("explicit table rank 4", rows.get(4) == ["0/1", "1/0", "3/0", "1/0", "4/0", "1/1"], rows.get(4))
check("explicit table rank 5", rows.get(5) == ["1/1", "3/0", "2/0", "1/1", "5/0", "0/0"], rows.get(5))
for kind in ("tp", "dcp", "pcp", "pp", "dp", "ep"):
    listed = [l.strip() for l in lines if l.split() and l.split()[0][:len(kind) + 2] in
              [f"{kind}:{digit}" for digit in "0123456789"]]
    check(f"explicit table {kind} groups",
          listed == [f"{kind}:{i} {group}" for i, group in enumerate(want[kind])], listed)
expect_usage_error("explicit disagreeing tp", ["layout", "--groups", good, "--tp", "4"], "--tp 4")
expect_usage_error("explicit bad group", ["layout", "--groups", os.path.join(DATA, "groups_bad_pp.json")], "pp group")
expect_usage_error("explicit missing file", ["layout", "--groups", "/nonexistent.json"], "/nonexistent.json")
expect_usage_error("explicit without file", ["layout", "--world-size", "4", "--tp", "2", "--placement", "explicit"], "--groups")

# Bad arguments: one line naming the problem, exit 2, nothing on stdout.
expect_usage_error("indivisible world", ["layout", "--world-size", "12", "--tp", "8"], "12")
expect_usage_error("dcp not dividing tp", ["layout", "--world-size", "8", "--tp", "4", "--dcp", "3"], "3")
expect_usage_error("zero size", ["layout", "--world-size", "8", "--tp", "0"], "--tp")
expect_usage_error("not a number", ["layout", "--world-size", "eight", "--tp", "2"], "eight")
expect_usage_error("unknown flag", ["layout", "--world-size", "8", "--tp", "2", "--bogus"], "--bogus")
expect_usage_error("missing value", ["layout", "--world-size", "8", "--tp"], "--tp")
expect_usage_error("missing world", ["layout", "--tp", "2"], "--world-size")
expect_usage_error("unknown placement", ["layout", "--world-size", "8", "--tp", "2", "--placement", "ring"], "ring")
expect_usage_error("supernode misfit", ["layout", "--world-size", "8", "--tp", "8", "--placement", "supernode"], "8")
expect_usage_error("geometry without supernode", ["layout", "--world-size", "8", "--tp", "2", "--tp-nodes", "2"], "--tp-nodes")
expect_usage_error("unknown command", ["frobnicate"], "frobnicate")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("cli: all checks passed")
