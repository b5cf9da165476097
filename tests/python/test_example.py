"""examples/python/pipeline_stages.py: a TP x PP torch model split into stages, checked against
one rank. Embedded (threads) and launched over shm and tcp; its last line is max_abs_diff=."""
import os
import subprocess
import sys

import pytest

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "python",
                       "pipeline_stages.py")
TOLERANCE = 1e-4


def max_abs_diff(stdout):
    last = stdout.strip().splitlines()[-1]
    assert "max_abs_diff=" in last, f"the last line is {last!r}"
    return float(last.split("max_abs_diff=")[1])


def test_embedded(child_env):
    proc = subprocess.run([sys.executable, EXAMPLE, "--embedded", "--tp", "2", "--pp", "2"],
                          env=child_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert max_abs_diff(proc.stdout) <= TOLERANCE


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_launched(launcher, child_env, transport):
    env = dict(child_env)
    if transport == "tcp":
        env["RANKMESH_TRANSPORT"] = "tcp"
    proc = subprocess.run([launcher, "launch", "--nproc-per-node", "4", "--timeout-s", "100", "--",
                           sys.executable, EXAMPLE, "--tp", "2", "--pp", "2"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rank0 = [line for line in proc.stdout.splitlines() if line.startswith("[rank 0] ")]
    assert rank0, proc.stdout
    assert max_abs_diff(rank0[-1].removeprefix("[rank 0] ")) <= TOLERANCE
