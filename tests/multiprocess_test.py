"""Worlds of several processes on one node: every operation — in the world of 1 to 8 ranks, in
its tp, pp, dp and ep groups, blocking and asynchronous — gives the values computed in
rankmesh-ops-check and what the in-process runtime gives, over the chosen transports and over shm
and tcp forced; a
lost, frozen or misconfigured rank fails the world within the failure timeout with an error
naming it and the survivors' last operations; malformed traffic is refused without taking a rank
down.

usage: multiprocess_test.py RANKMESH OPS_CHECK PIPELINE
Every process this test starts is tracked and killed by pid at the end. Nothing here sleeps to
let something happen: each wait watches for the state it needs (a line, a listening socket, a
process gone) until a deadline.
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

RANKMESH, OPS, PIPELINE = sys.argv[1:4]
SCALE = float(os.environ.get("RANKMESH_TIMEOUT_SCALE", "1"))
# The failure timeout the directly started worlds configure, and the runtime's documented
# default (README, "Failures": RANKMESH_FAILURE_TIMEOUT_MS, 2 s).
FAILURE_TIMEOUT_S = 1.0
DEFAULT_FAILURE_TIMEOUT_S = 2.0
# Beyond the failure timeout, noticing a failure may take the survivors' own shutdown and exit.
SHUTDOWN_SLACK_S = 2.0
failures = []
started = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(f"{name}: {detail}")
    print(("ok   " if condition else "FAIL ") + name, flush=True)


def failure_bound(timeout_s):
    """The longest a failure may take to end the survivors: the timeout plus shutdown, scaled."""
    return (timeout_s + SHUTDOWN_SLACK_S) * SCALE


def free_port():
    """A port free now. Another process may take it before ours binds it: see spawn_world."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_ports(pid):
    """The TCP ports on which process `pid` listens, from /proc (no connection is made)."""
    sockets = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                sockets.add(target[len("socket:["):-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in sockets:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class Lines:
    """A child's output line by line, never waiting past a deadline (readline() on a pipe waits
    forever for a child that hangs without writing)."""

    def __init__(self, pipe):
        self.fd = pipe.fileno()
        self.pending = b""
        self.ended = False

    def next(self, deadline):
        """The next line, or None at the deadline or at the end of the output."""
        while b"\n" not in self.pending and not self.ended:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            self.ended = not chunk
            self.pending += chunk
        if b"\n" not in self.pending:
            return None
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode(errors="replace")

    def wait_for(self, pattern, seconds):
        """The match of the first line matching `pattern` within `seconds` (scaled), or None."""
        deadline = time.time() + seconds * SCALE
        while (line := self.next(deadline)) is not None:
            if m := re.search(pattern, line):
                return m
        return None


stdout_lines = {}


def lines_of(p):
    return stdout_lines.setdefault(p, Lines(p.stdout))


def strip_prefix(lines):
    return sorted(re.sub(r"^\[rank \d+\] ", "", l) for l in lines)


def digest_lines(text):
    return strip_prefix(l for l in text.splitlines() if re.match(r"(\[rank \d+\] )?rank \d+: .* = ", l))


def launch(nproc, program, *args, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([RANKMESH, "launch", "--nproc-per-node", str(nproc), "--", program, *args],
                          capture_output=True, text=True, timeout=timeout * SCALE, env=env)


def spawn_world(world, ranks=None, secret_of=None, extra=None, payload=1024, op="all_reduce",
                failure_timeout_ms=int(FAILURE_TIMEOUT_S * 1000)):
    """Starts ranks directly (no launcher), torchrun-style; returns {index: Popen}. The process
    of rank 0 starts first and the others once it listens on MASTER_PORT; if another process took
    that port first, the world starts again on another. failure_timeout_ms=None keeps the
    runtime's default."""
    entries = list(enumerate(ranks if ranks is not None else range(world)))
    for _ in range(5):
        port = free_port()

        def start(i, rank):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                       RANKMESH_SECRET=(secret_of(i) if secret_of else "s3cret"),
                       RANKMESH_JOIN_TIMEOUT_MS="3000", **(extra or {}))
            env.pop("RANKMESH_FAILURE_TIMEOUT_MS", None)
            if failure_timeout_ms is not None:
                env["RANKMESH_FAILURE_TIMEOUT_MS"] = str(failure_timeout_ms)
            p = subprocess.Popen([OPS, "--world", str(world), "--loop", "--op", op, "--payload", str(payload)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            started.append(p)
            return p

        host = start(*entries[0])
        deadline = time.time() + 20 * SCALE
        while host.poll() is None and port not in listening_ports(host.pid) and time.time() < deadline:
            time.sleep(0.01)  # polling /proc for the listening socket
        if host.poll() is not None:
            err = host.stderr.read()
            if "could not host the registry" in err:
                continue
            raise RuntimeError(f"rank {entries[0][1]} exited before hosting the registry: {err[-800:]}")
        procs = {entries[0][0]: host}
        for i, rank in entries[1:]:
            procs[i] = start(i, rank)
        return procs
    raise RuntimeError("no free port for the registry in 5 tries")


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
    return lines_of(p).wait_for(r"looping", seconds) is not None


def wait_first_round(procs, seconds=30):
    """Every rank has finished one operation of its loop, so each is inside the next."""
    return all(lines_of(p).wait_for(r"first round done", seconds) is not None for p in procs.values())


def history_dump(err, rank, operation):
    """Whether `err` holds rank `rank`'s dump of its last operations, with at least one
    `operation` (a regular expression) in the world group sent to or received from a peer."""
    dump = re.search(rf"last operations of rank {rank} \(oldest first\):\n((?: {{4}}.*\n?)+)", err)
    return dump is not None and re.search(
        rf"^ {{4}}{operation} #\d+ on world:\d+: (sent \d+ payload bytes to|received \d+ payload bytes from) "
        rf"rank \d+$", dump.group(1), re.M) is not None


def noticed(what, procs, victim, seconds, timeout_s, operation):
    """The survivors of `victim` fail naming it, within the failure bound, dumping their history."""
    t0 = time.time()
    survivors = {k: p for k, p in procs.items() if k != victim}
    results = wait_all(survivors, seconds)
    elapsed = time.time() - t0
    for k, (code, err) in results.items():
        check(f"{what}: rank {k} fails naming rank {victim}", code not in (None, 0) and f"rank {victim}" in err,
              f"exit {code}: {err[-800:]}")
        check(f"{what}: rank {k} logs its last operations ({operation})", history_dump(err, k, operation),
              err[-1500:])
    check(f"{what}: noticed in {elapsed:.1f} s, within the failure timeout {timeout_s:g} s + "
          f"{SHUTDOWN_SLACK_S:g} s, x {SCALE:g}", elapsed <= failure_bound(timeout_s), f"{elapsed:.1f} s")


try:
    # --- every operation, checked against the values computed in ops_check (its exit status)
    #     and compared with the in-process runtime
    for world in (1, 2, 3, 4, 8):
        embedded = subprocess.run([OPS, "--world", str(world)], capture_output=True, text=True,
                                  timeout=60 * SCALE)
        reference = digest_lines(embedded.stdout)
        check(f"in-process reference for {world} ranks", embedded.returncode == 0 and reference,
              embedded.stderr[-2000:])
        check(f"{world} ranks ran the tp, pp, dp and ep groups and the asynchronous forms",
              all(any(f": {kind} async_all_reduce max = " in l for l in reference) for kind in ("tp", "pp", "dp", "ep")))
        for transport in ("auto", "shm", "tcp"):
            r = launch(world, OPS, "--world", str(world), env_extra={"RANKMESH_TRANSPORT": transport})
            got = digest_lines(r.stdout)
            check(f"{world} processes over {transport}: every result as computed, and as in one process",
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

    # --- a rank killed mid-run: the others fail within the failure timeout, naming it, and dump
    #     their last operations
    procs = spawn_world(3)
    check("world of 3 formed", all(wait_looping(p) for p in procs.values()) and wait_first_round(procs))
    procs[2].send_signal(signal.SIGKILL)
    noticed("SIGKILL of rank 2", procs, 2, 10, FAILURE_TIMEOUT_S, "all_reduce")

    # --- killed in the middle of 64 MiB transfers, over shm and over tcp
    for transport in ("auto", "tcp"):
        procs = spawn_world(3, payload=16 << 20, extra={"RANKMESH_TRANSPORT": transport})
        check(f"64 MiB world of 3 formed ({transport})",
              all(wait_looping(p) for p in procs.values()) and wait_first_round(procs))
        procs[2].send_signal(signal.SIGKILL)
        noticed(f"SIGKILL mid 64 MiB ({transport})", procs, 2, 10, FAILURE_TIMEOUT_S, "all_reduce")

    # --- broadcast_object through the shared-memory ring (rank 0 writes, 1 and 2 read), with
    #     objects beyond a ring slot: the writer or a reader killed, the writer frozen
    for victim, sig, size in ((0, signal.SIGKILL, 100), (2, signal.SIGKILL, 1 << 20), (0, signal.SIGSTOP, 1 << 20)):
        what = f"{signal.Signals(sig).name} of rank {victim} in broadcast_object ({size} B)"
        procs = spawn_world(3, op="broadcast_object", payload=size)
        check(f"world of 3 formed ({what})", all(wait_looping(p) for p in procs.values()) and wait_first_round(procs))
        procs[victim].send_signal(sig)
        # Broadcasts through the ring leave no record of their own; its set-up does.
        noticed(what, procs, victim, 10, FAILURE_TIMEOUT_S, r"broadcast_object( \(ring set-up\))?")
        if sig == signal.SIGSTOP:
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].send_signal(signal.SIGCONT)
        wait_all({victim: procs[victim]}, 10)

    # --- a frozen rank (SIGSTOP: no socket notices) fails the world through missing heartbeats,
    #     within the documented default failure timeout of 2 s
    procs = spawn_world(3, failure_timeout_ms=None)
    check("world of 3 formed (freeze)", all(wait_looping(p) for p in procs.values()) and wait_first_round(procs))
    procs[1].send_signal(signal.SIGSTOP)
    noticed("SIGSTOP of rank 1 (default failure timeout)", procs, 1, 15, DEFAULT_FAILURE_TIMEOUT_S, "all_reduce")
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
    while len(pids) < 3 and (line := lines_of(p).next(deadline)) is not None:
        m = re.search(r"rank (\d+): looping \(pid (\d+)\)", line)
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

    def running(pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                return "zombie" not in f.read()
        except OSError:
            return False

    # The launcher has exited; its ranks must be gone too (reaped, or at worst zombies), at once
    # or within the launcher's SIGTERM-to-SIGKILL grace of 5 s.
    deadline = time.time() + 5 * SCALE + SHUTDOWN_SLACK_S
    while any(running(pid) for pid in pids.values()) and time.time() < deadline:
        time.sleep(0.05)  # polling /proc
    alive = [pid for pid in pids.values() if running(pid)]
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
