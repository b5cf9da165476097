"""Worlds of several processes on one node: every operation gives what the in-process runtime
gives, over shm and (forced) tcp; a lost, frozen or misconfigured rank fails the world quickly
with an error naming it; malformed traffic is refused without taking a rank down.

usage: multiprocess_test.py RANKMESH OPS_CHECK PIPELINE
Every process this test starts is tracked and killed by pid at the end.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

RANKMESH, OPS, PIPELINE = sys.argv[1:4]
SCALE = float(os.environ.get("RANKMESH_TIMEOUT_SCALE", "1"))
failures = []
started = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(f"{name}: {detail}")
    print(("ok   " if condition else "FAIL ") + name, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_prefix(lines):
    return sorted(re.sub(r"^\[rank \d+\] ", "", l) for l in lines)


def digest_lines(text):
    return strip_prefix(l for l in text.splitlines() if re.match(r"(\[rank \d+\] )?rank \d+: .* = ", l))


def launch(nproc, program, *args, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([RANKMESH, "launch", "--nproc-per-node", str(nproc), "--", program, *args],
                          capture_output=True, text=True, timeout=timeout * SCALE, env=env)


def spawn_world(world, ranks=None, secret_of=None, extra=None, payload=1024, op="all_reduce"):
    """Starts ranks directly (no launcher), torchrun-style; returns {rank: Popen}."""
    port = free_port()
    procs = {}
    for i, rank in enumerate(ranks if ranks is not None else range(world)):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   RANKMESH_SECRET=(secret_of(i) if secret_of else "s3cret"),
                   RANKMESH_FAILURE_TIMEOUT_MS="1000", RANKMESH_JOIN_TIMEOUT_MS="3000",
                   **(extra or {}))
        p = subprocess.Popen([OPS, "--world", str(world), "--loop", "--op", op, "--payload", str(payload)],
                             env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        started.append(p)
        procs[i] = p
    return procs


def wait_all(procs, seconds):
    """Waits for every process; returns {key: (returncode or None, stderr)}."""
    deadline = time.time() + seconds * SCALE
    out = {}
    for key, p in procs.items():
        try:
            _, err = p.communicate(timeout=max(0.1, deadline - time.time()))
            out[key] = (p.returncode, err)
        except subprocess.TimeoutExpired:
            out[key] = (None, "")
    return out


def wait_looping(p, seconds=20):
    deadline = time.time() + seconds * SCALE
    line = ""
    while time.time() < deadline:
        line = p.stdout.readline()
        if "looping" in line:
            return True
    return False


try:
    # --- every operation, compared with the in-process runtime
    for world in (2, 3, 4):
        embedded = subprocess.run([OPS, "--world", str(world)], capture_output=True, text=True,
                                  timeout=60 * SCALE)
        reference = digest_lines(embedded.stdout)
        check(f"in-process reference for {world} ranks", embedded.returncode == 0 and reference,
              embedded.stderr)
        for transport in ("auto", "tcp"):
            r = launch(world, OPS, "--world", str(world), env_extra={"RANKMESH_TRANSPORT": transport})
            got = digest_lines(r.stdout)
            check(f"{world} processes over {transport}: every operation as in one process",
                  r.returncode == 0 and got == reference,
                  f"exit {r.returncode}\n{r.stderr[-2000:]}\n" +
                  "\n".join(sorted(set(got) ^ set(reference))[:10]))

    # --- the pipeline example prints the same max_abs_diff as in one process
    alone = subprocess.run([PIPELINE], capture_output=True, text=True, timeout=60 * SCALE)
    want = alone.stdout.splitlines()[-1]
    for transport in ("auto", "tcp"):
        r = launch(4, PIPELINE, env_extra={"RANKMESH_TRANSPORT": transport})
        lines = [re.sub(r"^\[rank \d+\] ", "", l) for l in r.stdout.splitlines()]
        check(f"pipeline under launch over {transport}", r.returncode == 0 and want in lines,
              f"want {want!r}, exit {r.returncode}: {r.stderr[-1500:]}")

    # --- a rank killed mid-run: the others fail quickly, naming it
    procs = spawn_world(3)
    check("world of 3 formed", all(wait_looping(p) for p in procs.values()))
    procs[2].send_signal(signal.SIGKILL)
    t0 = time.time()
    results = wait_all({k: procs[k] for k in (0, 1)}, 10)
    elapsed = time.time() - t0
    for k, (code, err) in results.items():
        check(f"SIGKILL of rank 2: rank {k} fails naming it", code not in (None, 0) and "rank 2" in err,
              f"exit {code}: {err[-800:]}")
    check("SIGKILL of rank 2: noticed within a few seconds", elapsed < 5 * SCALE, f"{elapsed:.1f} s")

    # --- killed in the middle of 64 MiB transfers, over shm and over tcp
    for transport in ("auto", "tcp"):
        procs = spawn_world(3, payload=16 << 20, extra={"RANKMESH_TRANSPORT": transport})
        check(f"64 MiB world of 3 formed ({transport})", all(wait_looping(p) for p in procs.values()))
        time.sleep(0.3)
        procs[2].send_signal(signal.SIGKILL)
        t0 = time.time()
        results = wait_all({k: procs[k] for k in (0, 1)}, 10)
        elapsed = time.time() - t0
        for k, (code, err) in results.items():
            check(f"SIGKILL mid 64 MiB ({transport}): rank {k} fails naming rank 2",
                  code not in (None, 0) and "rank 2" in err, f"exit {code}: {err[-800:]}")
        check(f"SIGKILL mid 64 MiB ({transport}): within a few seconds", elapsed < 5 * SCALE, f"{elapsed:.1f} s")

    # --- broadcast_object through the shared-memory ring (rank 0 writes, 1 and 2 read), with
    #     objects beyond a ring slot: the writer or a reader killed, the writer frozen
    for victim, sig, size in ((0, signal.SIGKILL, 100), (2, signal.SIGKILL, 1 << 20), (0, signal.SIGSTOP, 1 << 20)):
        what = f"{signal.Signals(sig).name} of rank {victim} in broadcast_object ({size} B)"
        procs = spawn_world(3, op="broadcast_object", payload=size)
        check(f"world of 3 formed ({what})", all(wait_looping(p) for p in procs.values()))
        time.sleep(0.2)
        procs[victim].send_signal(sig)
        t0 = time.time()
        survivors = [k for k in procs if k != victim]
        results = wait_all({k: procs[k] for k in survivors}, 10)
        elapsed = time.time() - t0
        for k, (code, err) in results.items():
            check(f"{what}: rank {k} fails naming it", code not in (None, 0) and f"rank {victim}" in err,
                  f"exit {code}: {err[-800:]}")
        check(f"{what}: noticed within a few seconds", elapsed < 5 * SCALE, f"{elapsed:.1f} s")
        if sig == signal.SIGSTOP:
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].send_signal(signal.SIGCONT)
        wait_all({victim: procs[victim]}, 10)

    # --- a frozen rank (SIGSTOP: no socket notices) fails the world through missing heartbeats
    procs = spawn_world(3)
    check("world of 3 formed (freeze)", all(wait_looping(p) for p in procs.values()))
    procs[1].send_signal(signal.SIGSTOP)
    t0 = time.time()
    results = wait_all({k: procs[k] for k in (0, 2)}, 10)
    elapsed = time.time() - t0
    for k, (code, err) in results.items():
        check(f"SIGSTOP of rank 1: rank {k} fails naming it", code not in (None, 0) and "rank 1" in err,
              f"exit {code}: {err[-800:]}")
    check("SIGSTOP of rank 1: noticed within a few seconds", elapsed < 5 * SCALE, f"{elapsed:.1f} s")
    procs[1].send_signal(signal.SIGKILL)
    procs[1].send_signal(signal.SIGCONT)

    # --- a member with a wrong secret fails the world on every rank
    procs = spawn_world(3, secret_of=lambda i: "wrong" if i == 1 else "s3cret")
    results = wait_all(procs, 15)
    check("wrong secret: every rank exits non-zero",
          all(code not in (None, 0) for code, _ in results.values()), str(results))
    check("wrong secret: named", any("wrong secret" in err for _, err in results.values()),
          str([e[-300:] for _, e in results.values()]))

    # --- a duplicate rank, and a rank that never shows up
    procs = spawn_world(3, ranks=[0, 1, 1])
    results = wait_all(procs, 15)
    check("duplicate rank: every rank exits non-zero",
          all(code not in (None, 0) for code, _ in results.values()), str(results))
    check("duplicate rank: named", any("rank 1 joined twice" in err for _, err in results.values()),
          str([e[-300:] for _, e in results.values()]))
    procs = spawn_world(3, ranks=[0, 1])
    results = wait_all(procs, 15)
    check("missing rank: every rank exits non-zero",
          all(code not in (None, 0) for code, _ in results.values()), str(results))
    check("missing rank: named", any("rank(s) 2 did not join" in err for _, err in results.values()),
          str([e[-300:] for _, e in results.values()]))

    # --- a rank killed under the launcher: it stops the rest and names the rank
    env = dict(os.environ)
    p = subprocess.Popen([RANKMESH, "launch", "--nproc-per-node", "3", "--", OPS, "--world", "3", "--loop"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    started.append(p)
    pids = {}
    deadline = time.time() + 20 * SCALE
    while len(pids) < 3 and time.time() < deadline:
        m = re.search(r"rank (\d+): looping \(pid (\d+)\)", p.stdout.readline())
        if m:
            pids[int(m.group(1))] = int(m.group(2))
    check("launched world of 3 formed", len(pids) == 3, str(pids))
    if 2 in pids:
        os.kill(pids[2], signal.SIGKILL)
    try:
        _, err = p.communicate(timeout=15 * SCALE)
    except subprocess.TimeoutExpired:
        err = ""
    check("launcher exits non-zero naming rank 2", p.returncode not in (None, 0) and "rank 2" in err,
          f"exit {p.returncode}: {err[-600:]}")
    time.sleep(0.5)
    alive = [pid for pid in pids.values() if os.path.exists(f"/proc/{pid}") and
             "zombie" not in open(f"/proc/{pid}/status").read()]
    check("nothing left running", not alive, str(alive))
finally:
    for p in started:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("multiprocess: all checks passed")
