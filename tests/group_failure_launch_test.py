"""A group failure notice across processes (issue 13, collective consensus): under
`rankmesh launch`, rank 0 of a world of 3 fails its tp group while ranks 1 and 2 wait in
broadcasts from each other; the notice, relayed by the registry, must end both waits with the
reason within a few seconds (the operation timeout is 30 s), later calls on the group fail at
once, and the world group and a rebuilt tp group work (tests/programs/group_fail_check.cpp checks
those per rank). Over shm and tcp, and once embedded (one process) for comparison.

usage: group_failure_launch_test.py RANKMESH GROUP_FAIL_CHECK
"""
import os
import re
import subprocess
import sys

RANKMESH, CHECK = sys.argv[1:3]
SCALE = float(os.environ.get("RANKMESH_TIMEOUT_SCALE", "1"))
failures = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(f"{name}: {detail}")
    print(("ok   " if condition else "FAIL ") + name, flush=True)


def verify(name, r):
    out = r.stdout
    check(f"{name}: exit status 0", r.returncode == 0, f"{r.returncode}\n{out}\n{r.stderr[-3000:]}")
    for rank in range(3):
        check(f"{name}: rank {rank} ok", re.search(rf"(^|\] )rank {rank}: ok$", out, re.M) is not None, out)
    for rank in (1, 2):
        m = re.search(rf"rank {rank}: notice after ([0-9.]+) s: (.*)$", out, re.M)
        check(f"{name}: rank {rank}'s wait ended by the notice, with the reason",
              m is not None and "the group failed: rank 0 saw the group's collectives diverge" in m.group(2),
              out)
        if m:
            print(f"     rank {rank} waited {float(m.group(1)):.3f} s (rank 0 failed the group ~1 s in)")


for transport in ("shm", "tcp"):
    env = dict(os.environ, RANKMESH_TRANSPORT=transport)
    r = subprocess.run([RANKMESH, "launch", "--nproc-per-node", "3", "--", CHECK, "--world", "3"],
                       capture_output=True, text=True, timeout=120 * SCALE, env=env)
    verify(f"launched over {transport}", r)
    if transport == "tcp":
        check("launched over tcp: the registry logged the relay",
              "rank 0 failed group" in r.stderr and "told rank(s) 1, 2" in r.stderr, r.stderr[-3000:])

r = subprocess.run([CHECK, "--world", "3"], capture_output=True, text=True, timeout=120 * SCALE)
verify("embedded", r)

if failures:
    print("\n".join(["FAILED:"] + failures))
    sys.exit(1)
