"""rankmesh-pipeline: matches the one-rank model for tp 1/2/4 x pp 1/2/4, and its stages overlap.

Overlap is checked by order, not time: stage 1 starts microbatch 0 before stage 0 finishes its
last microbatch. --device cuda either matches the model too (a GPU is present) or is refused with
exit code 2 and its reason (no GPU here, or a build without the CUDA backend).
usage: pipeline_test.py PATH_TO_rankmesh-pipeline
"""
import re
import subprocess
import sys

BINARY = sys.argv[1]
failures = []


def run(*args):
    r = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=120)
    lines = r.stdout.splitlines()
    return r.returncode, lines, r.stderr


for tp in (1, 2, 4):
    for pp in (1, 2, 4):
        code, lines, err = run("--tp", str(tp), "--pp", str(pp))
        last = lines[-1] if lines else ""
        match = re.fullmatch(r"max_abs_diff=(\S+)", last)
        if code != 0 or not match or float(match.group(1)) > 1e-4:
            failures.append(f"tp {tp} pp {pp}: exit {code}, last line {last!r}, stderr {err!r}")

microbatches = 6
code, lines, err = run("--trace", "--microbatches", str(microbatches))
if code != 0:
    failures.append(f"--trace run: exit {code}: {err}")
else:
    trace = [l for l in lines if l.startswith("trace: ")]
    try:
        stage1_starts = trace.index("trace: stage 1 starts microbatch 0")
        stage0_done = trace.index(f"trace: stage 0 finishes microbatch {microbatches - 1}")
        if not stage1_starts < stage0_done:
            failures.append("stages did not overlap:\n" + "\n".join(trace))
    except ValueError as e:
        failures.append(f"trace incomplete ({e}):\n" + "\n".join(trace))
    # Each rank holds 1/tp of its stage's layers: 4 layers x (64x128 + 128x64) floats / 2.
    weights = [int(m.group(1)) for l in lines if (m := re.search(r"(\d+) weight bytes", l))]
    if weights != [131072] * 4:
        failures.append(f"weight bytes per rank: {weights}")

code, lines, err = run("--tp", "3")
if code != 2 or "does not split" not in err:
    failures.append(f"--tp 3 (inner size 128): exit {code}, stderr {err!r}")

# Without a GPU the refusal must name the cause: the backend's reason, or the missing backend.
code, lines, err = run("--device", "cuda")
last = lines[-1] if lines else ""
if code == 0:
    match = re.fullmatch(r"max_abs_diff=(\S+)", last)
    if not match or float(match.group(1)) > 1e-4:
        failures.append(f"--device cuda: last line {last!r}")
    else:
        print("--device cuda: ran on the GPU, " + last)
elif code == 2 and re.search(r"rankmesh-pipeline: no CUDA device: \S", err):
    print("--device cuda: skipped, " + err.strip())
elif code == 2 and "this build has no CUDA backend" in err:
    print("--device cuda: skipped, " + err.strip())
else:
    failures.append(f"--device cuda: exit {code}, last line {last!r}, stderr {err!r}")

code, lines, err = run("--device", "tpu")
if code != 2 or "--device must be cpu or cuda" not in err:
    failures.append(f"--device tpu: exit {code}, stderr {err!r}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("pipeline: all checks passed")
