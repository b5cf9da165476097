"""Nothing of a world is left in /dev/shm, whichever way it ends: the launcher's whole process
group SIGKILLed while the ranks are setting up their shared memory (before peers attach), the
launcher alone SIGKILLed or SIGTERMed while the world runs over shm.

usage: shm_cleanup_test.py RANKMESH OPS_CHECK
Every process this test starts runs in a session of its own (the launcher gives its ranks
process groups of their own inside it); whatever of it is left is killed by pid at the end.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

RANKMESH, OPS = sys.argv[1:3]
SCALE = float(os.environ.get("RANKMESH_TIMEOUT_SCALE", "1"))
WORLD = 3
failures = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(f"{name}: {detail}")
    print(("ok   " if condition else "FAIL ") + name, flush=True)


def session_pids(sid):
    """The live processes of session `sid` (zombies excluded)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def holds_segment(pid):
    """Whether `pid` has made or mapped a shared-memory segment: a memfd of rankmesh's (its
    descriptor, held until the peer attached, or its mapping, which a 2 ms poll on a loaded
    machine may be the first to see), or a name of its own in /dev/shm (older builds)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:rankmesh"):
                return True
        with open(f"/proc/{pid}/maps") as maps:
            if "/memfd:rankmesh" in maps.read():
                return True
    except OSError:
        return False
    return bool(leftovers([pid]))


def leftovers(pids):
    prefixes = tuple(f"rankmesh-{pid}-" for pid in pids)
    return [name for name in os.listdir("/dev/shm") if name.startswith(prefixes)]


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds * SCALE
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


def kill_session(sid):
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_case(name, kill):
    """Starts a world of WORLD ranks over shm under the launcher (in a session of its own), lets
    `kill(launcher, seen, watch, out)` end it, then checks that no process of the session made a
    segment that is still in /dev/shm. `watch()` adds the session's pids to `seen`."""
    out = tempfile.TemporaryFile(mode="w+")
    env = dict(os.environ, RANKMESH_TRANSPORT="shm", RANKMESH_JOIN_TIMEOUT_MS="5000",
               RANKMESH_FAILURE_TIMEOUT_MS="1000")
    launcher = subprocess.Popen([RANKMESH, "launch", "--nproc-per-node", str(WORLD), "--", OPS,
                                 "--world", str(WORLD), "--loop"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    seen = set()

    def watch():
        seen.update(session_pids(launcher.pid))
        return False

    try:
        kill(launcher, seen, watch, out)
        gone = wait_for(lambda: watch() or not session_pids(launcher.pid), 30)
        check(f"{name}: every process of the world ends", gone, f"left: {session_pids(launcher.pid)}")
        left = leftovers(seen | {launcher.pid})
        check(f"{name}: nothing left in /dev/shm", not left, f"{left}")
        for leaked in left:  # the test itself leaves nothing behind
            os.unlink(f"/dev/shm/{leaked}")
    finally:
        kill_session(launcher.pid)
        launcher.wait(timeout=30)
        out.close()


def during_setup(launcher, seen, watch, out):
    # Everything dies at the first sight of a segment: before its peer has attached.
    made = wait_for(lambda: watch() or any(holds_segment(pid) for pid in session_pids(launcher.pid)), 30)
    check("killed during set-up: a rank made a segment first", made)
    kill_session(launcher.pid)


def running(sig):
    def kill(launcher, seen, watch, out):
        def looping():
            watch()
            out.seek(0)
            return out.read().count("looping") == WORLD
        check(f"launcher {sig.name} while running: the world formed", wait_for(looping, 60))
        launcher.send_signal(sig)
    return kill


run_case("every process SIGKILLed during set-up", during_setup)
run_case("launcher SIGKILLed while running", running(signal.SIGKILL))
run_case("launcher SIGTERMed while running", running(signal.SIGTERM))

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
