#!/usr/bin/python3
"""vLLM's own group expressions, in numpy, against `rankmesh layout --json`.

Usage: /usr/bin/python3 tests/layout_oracle.py PATH_TO_rankmesh

For every valid configuration with world size <= 64 (dp*pp*pcp*tp divides the world, dcp
divides tp) it computes the groups the way vLLM's initialize_model_parallel does and compares
every kind's group list exactly, order included. Properties cannot tell a layout with TP and PP
swapped from the right one; this can. It also checks the supernode placement: the vendor table
verbatim (all four lists, group order included), and the pinned rule over every configuration the default geometry fits.
Exits non-zero on any mismatch.
"""

import concurrent.futures
import json
import subprocess
import sys
import time

import numpy as np

MAX_WORLD = 64  # or the second argument
KINDS = ("tp", "dcp", "pcp", "pp", "dp", "ep")
DEVICES_PER_NODE = 8  # the CLI's defaults for --devices-per-node and --tp-nodes
TP_NODES = 2

# The vendor plugin's hard-coded table: its four lists, group order included.
SUPERNODE_TABLE = {
    "world_size": 16,
    "tp": [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]],
    "pp": [[0, 4], [1, 5], [2, 6], [3, 7], [8, 12], [9, 13], [10, 14], [11, 15]],
    "dp": [[r] for r in range(16)],
    "ep": [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]],
}


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def valid_configs():
    for world in range(1, MAX_WORLD + 1):
        for tp in divisors(world):
            for pp in divisors(world // tp):
                for dp in divisors(world // tp // pp):
                    for pcp in divisors(world // tp // pp // dp):
                        for dcp in divisors(tp):
                            yield dict(world=world, tp=tp, pp=pp, dp=dp, dcp=dcp, pcp=pcp)


def vllm_groups(c):
    """vLLM's expressions as written, with torch's transpose(a, b) as numpy's swapaxes(a, b)
    (numpy's own transpose takes a whole axis permutation) and unbind(0) as rows in order."""
    all_ranks = np.arange(c["world"]).reshape(-1, c["dp"], c["pp"], c["pcp"], c["tp"])
    return {
        "world_size": c["world"],
        "tp": all_ranks.reshape(-1, c["tp"]).tolist(),
        "dcp": all_ranks.reshape(-1, c["dcp"]).tolist(),
        "pcp": all_ranks.swapaxes(3, 4).reshape(-1, c["pcp"]).tolist(),
        "pp": all_ranks.swapaxes(2, 4).reshape(-1, c["pp"]).tolist(),
        "dp": all_ranks.swapaxes(1, 4).reshape(-1, c["dp"]).tolist(),
        "ep": all_ranks.swapaxes(1, 2).reshape(-1, c["dp"] * c["pcp"] * c["tp"]).tolist(),
    }


def supernode_fits(c):
    per_node = c["tp"] // TP_NODES
    return (c["tp"] % TP_NODES == 0 and DEVICES_PER_NODE % per_node == 0
            and c["world"] % (TP_NODES * DEVICES_PER_NODE) == 0)


def supernode_groups(c):
    """The pinned rule: member t of logical TP group g goes to node (g // m) * k + t // s,
    device (g % m) * s + t % s; every kind is vLLM's list mapped rank by rank, members in that
    order, the groups listed in ascending order of their first member."""
    k, devices = TP_NODES, DEVICES_PER_NODE
    s = c["tp"] // k
    m = devices // s

    def physical(rank):
        g, t = divmod(rank, c["tp"])
        return ((g // m) * k + t // s) * devices + (g % m) * s + t % s

    logical = vllm_groups(c)
    mapped = {"world_size": c["world"]}
    for kind in KINDS:
        mapped[kind] = sorted(([physical(r) for r in group] for group in logical[kind]),
                              key=lambda group: group[0])
    return mapped


def run_layout(binary, c, placement):
    argv = [binary, "layout", "--world-size", str(c["world"]), "--tp", str(c["tp"]),
            "--pp", str(c["pp"]), "--dp", str(c["dp"]), "--dcp", str(c["dcp"]),
            "--pcp", str(c["pcp"]), "--placement", placement, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return None, f"exit {done.returncode}: {done.stderr.strip()}"
    try:
        return json.loads(done.stdout), None
    except json.JSONDecodeError as error:
        return None, f"stdout is not one JSON object ({error}): {done.stdout[:200]!r}"


def compare(binary, c, placement, expected):
    """A list of mismatch lines; empty when rankmesh agrees."""
    label = (f"{placement} world {c['world']} tp {c['tp']} pp {c['pp']} dp {c['dp']} "
             f"dcp {c['dcp']} pcp {c['pcp']}")
    got, error = run_layout(binary, c, placement)
    if error:
        return [f"{label}: {error}"]
    problems = []
    if list(got) != ["world_size", *KINDS]:
        problems.append(f"{label}: keys {list(got)}, expected {['world_size', *KINDS]}")
    for key in expected:
        if got.get(key) != expected[key]:
            problems.append(f"{label}: {key} is {got.get(key)}, expected {expected[key]}")
    return problems


def main():
    global MAX_WORLD
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: layout_oracle.py PATH_TO_rankmesh [MAX_WORLD]")
    binary = sys.argv[1]
    if len(sys.argv) == 3:
        MAX_WORLD = int(sys.argv[2])
    started = time.monotonic()

    jobs = []
    for c in valid_configs():
        jobs.append((c, "contiguous", vllm_groups(c)))
        if supernode_fits(c):
            jobs.append((c, "supernode", supernode_groups(c)))
    table = dict(world=16, tp=8, pp=2, dp=1, dcp=1, pcp=1)
    jobs.append((table, "supernode", SUPERNODE_TABLE))

    # Two workers: each job is a process start, and the machine may be running a build beside.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: compare(binary, *job), jobs))
    mismatches = [line for problems in results for line in problems]

    contiguous = sum(1 for job in jobs if job[1] == "contiguous")
    elapsed = time.monotonic() - started
    print(f"checked {contiguous} configurations (world <= {MAX_WORLD}) against vLLM's expressions "
          f"and {len(jobs) - contiguous} supernode placements in {elapsed:.1f} s: "
          f"{len(mismatches)} mismatches")
    for line in mismatches[:20]:
        print("  " + line)
    if len(mismatches) > 20:
        print(f"  ... and {len(mismatches) - 20} more")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
