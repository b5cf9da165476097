"""`rankmesh launch` as a user meets it: torchrun's variables, rank-prefixed output, a failing rank
stopping the others, forwarded signals, the run's secret, one-line usage errors, a timeout that
holds when nobody reads the output, and no process of the tree (grandchildren and daemons
included) outliving the launcher, not even when it is killed with SIGKILL, also during start-up.

Every wait is on observed state with a deadline; deadlines are multiples of the launcher's
configured timeouts and scale with RANKMESH_TIMEOUT_SCALE, as the launcher's own do.

usage: launch_test.py PATH_TO_rankmesh
"""
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time

BINARY = sys.argv[1]
PYTHON = sys.executable
SCALE = float(os.environ.get("RANKMESH_TIMEOUT_SCALE", "1"))
# The launcher's grace after SIGTERM is 5 s x its scale; runs that must escalate get this scale.
SHORT_GRACE = {"RANKMESH_TIMEOUT_SCALE": str(0.2 * SCALE)}
failures = []
launchers = []  # every launcher started with Popen, stopped at the end if still running
spawned = []    # (pid, text in its command line) of every rank and descendant seen
markers = []    # the markers of runs whose every process carries one


def check(name, condition, detail=""):
    if not condition:
        failures.append(f"{name}: {detail}")


def scaled(seconds):
    """A deadline for the test: `seconds` of the launcher's configured time, scaled alike."""
    return seconds * SCALE


def environment(set_=None, unset=()):
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(set_ or {})
    return env


def launch(*args, env=None, within=20):
    """Runs the launcher to its end, which must come within `within` scaled seconds."""
    try:
        return subprocess.run([BINARY, "launch", *args], capture_output=True, text=True,
                              timeout=scaled(within), env=env)
    except subprocess.TimeoutExpired as expired:  # run() has killed the launcher
        failures.append(f"launch {args} did not end within {scaled(within):.0f} s")
        return subprocess.CompletedProcess(expired.cmd, None, expired.stdout or "", expired.stderr or "")


def python(code, *args):
    return ["--", PYTHON, "-c", code, *args]


def alive(pid):
    """Running, that is: neither gone nor a zombie that its new parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before or while we read
        return False


def all_gone(pids, within=5):
    deadline = time.monotonic() + scaled(within)
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


def read_pids(path, count, within=10):
    """Waits until `count` ranks have written their pids to `path`."""
    deadline = time.monotonic() + scaled(within)
    while True:
        if os.path.exists(path):
            with open(path) as f:
                pids = [int(line) for line in f.read().split()]
            if len(pids) >= count:
                spawned.extend((p, path) for p in pids)
                return pids
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{count} ranks did not write their pids to {path} within {scaled(within)} s")


def marked(marker):
    """Pids of the running processes (zombies left out) whose command line holds `marker`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
        except OSError:
            continue
        if alive(int(entry)):
            pids.append(int(entry))
    return pids


def wait_until(condition, within):
    """Whether `condition()` held at some point within `within` scaled seconds."""
    deadline = time.monotonic() + scaled(within)
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def last_line(text):
    lines = text.splitlines()
    return lines[-1] if lines else ""


def expect_usage_error(name, args, needle, env=None):
    r = launch(*args, env=env)
    check(name, r.returncode == 2, f"exit {r.returncode}, want 2")
    check(name, r.stdout == "", f"stdout not empty: {r.stdout!r}")
    check(name, len(r.stderr.splitlines()) == 1, f"want one stderr line, got {r.stderr!r}")
    check(name, needle in r.stderr, f"stderr {r.stderr!r} does not name {needle!r}")


# A rank that writes its pid to argv[1], then sleeps; on SIGTERM, SIGINT, SIGHUP or SIGQUIT it
# says so and exits 0, so that output shows the signal was forwarded. With argv[2] ==
# "fail-rank-1", rank 1 exits 3 instead, and with "kill-rank-2" rank 2 kills itself with SIGKILL,
# both once every rank has started; with "ignore-term" it ignores SIGTERM.
SLEEPER = r"""
import os, signal, sys, time
rank = int(os.environ["RANK"])
mode = sys.argv[2] if len(sys.argv) > 2 else ""
def stopped(sig, frame):
    print("got", signal.Signals(sig).name, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore-term" else stopped)
for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(sig, stopped)
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\n")
def when_all_started():
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(sys.argv[1]) as f:
            if len(f.read().split()) == int(os.environ["WORLD_SIZE"]):
                return
        time.sleep(0.02)
if mode == "fail-rank-1" and rank == 1:
    when_all_started()
    sys.exit(3)
if mode == "kill-rank-2" and rank == 2:
    when_all_started()
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""

# A rank that leaves a tree behind it: a sleeping child in its process group, and a daemon
# (setsid, then a second fork whose parent exits) that has left the group. Each process carries
# argv[1], a marker unique to the run, in its command line; the rank writes its pid to argv[2]
# once both exist, then sleeps, ignoring SIGTERM. With argv[3] == "rank-0-only", the other ranks
# never get that far: they stay in their start-up.
TREE = r"""
import os, signal, subprocess, sys, time
marker, pids = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if sys.argv[3:] == ["rank-0-only"] and os.environ["RANK"] != "0":
    time.sleep(60)
sleeper = [sys.executable, "-c", "import time; time.sleep(60)", marker]
subprocess.Popen(sleeper)
daemon_parent = os.fork()
if daemon_parent == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, sleeper)
    os._exit(0)
os.waitpid(daemon_parent, 0)  # once it has exited, the daemon exists
with open(pids, "a") as f:
    f.write(f"{os.getpid()}\n")
time.sleep(60)
"""

tmp = tempfile.TemporaryDirectory(prefix="rankmesh-launch-test-")
counter = 0


def pid_file():
    global counter
    counter += 1
    return os.path.join(tmp.name, f"pids-{counter}")


def unique_marker():
    global counter
    counter += 1
    markers.append(f"rankmesh-launch-test-{os.getpid()}-{counter}")
    return markers[-1]


def test_environment():
    # torchrun's variables for 3 ranks on one node; every rank sees the same free port.
    show = ("import os; print(*(os.environ[v] for v in ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', "
            "'LOCAL_WORLD_SIZE', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT']))")
    r = launch("--nproc-per-node", "3", *python(show))
    check("env exit", r.returncode == 0, r.stderr)
    rows = sorted(line.split() for line in r.stdout.splitlines())
    check("env ranks", [row[:2] for row in rows] == [["[rank", f"{i}]"] for i in range(3)], r.stdout)
    values = [row[2:] for row in rows]
    port = values[0][-1] if values else ""
    check("env port", port.isdigit() and 0 < int(port) < 65536, r.stdout)
    want = [[str(i), "3", str(i), "3", "0", "127.0.0.1", port] for i in range(3)]
    check("env values", values == want, f"{values} != {want}")

    # Node 1 of 2 holds ranks 2 and 3; the given address and port pass through.
    r = launch("--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "2", "--master-addr",
               "10.1.2.3", "--master-port", "29501", *python(show),
               env=environment({"RANKMESH_SECRET": "s"}))
    check("multi-node exit", r.returncode == 0, r.stderr)
    values = sorted(line.split()[2:] for line in r.stdout.splitlines())
    want = [[str(2 + i), "4", str(i), "2", "1", "10.1.2.3", "29501"] for i in range(2)]
    check("multi-node values", values == want, f"{values} != {want}")


def test_registry_socket_handed_to_rank_0():
    # One node: the launcher binds rank 0's MASTER_PORT itself and hands rank 0 the socket,
    # listening, so that the port is never free for another local process to take between its
    # choice and the registry's bind. Only rank 0 gets it; neither its supervisor nor the
    # launcher keeps a copy (the registry's end closes the socket for good); rank 1 has none.
    probe = (
        "import os, socket, sys\n"
        "rank = os.environ['RANK']\n"
        "fd = os.environ.get('RANKMESH_REGISTRY_FD')\n"
        "if rank != '0':\n"
        "    print('none' if fd is None else 'unexpected ' + fd); sys.exit(0)\n"
        "s = socket.socket(fileno=os.dup(int(fd)))\n"
        "listening = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)\n"
        "port = s.getsockname()[1]; s.detach()\n"
        "mine = os.readlink(f'/proc/self/fd/{fd}')\n"
        "def holds(pid):\n"
        "    d = f'/proc/{pid}/fd'\n"
        "    return any(os.readlink(os.path.join(d, n)) == mine for n in os.listdir(d))\n"
        "supervisor = os.getppid()\n"
        "launcher = int(open(f'/proc/{supervisor}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "print(listening, port == int(os.environ['MASTER_PORT']), holds(supervisor), holds(launcher))\n"
    )
    r = launch("--nproc-per-node", "2", *python(probe))
    check("registry socket exit", r.returncode == 0, r.stderr)
    lines = sorted(r.stdout.splitlines())
    check("registry socket to rank 0 only",
          lines == ["[rank 0] 1 True False False", "[rank 1] none"], r.stdout)


def test_output_prefixes():
    # stdout lines to stdout, stderr lines to stderr, each behind its rank; an unterminated last
    # line still arrives whole.
    code = ("import sys; sys.stdout.write('one\\ntwo\\n'); sys.stdout.flush(); "
            "sys.stderr.write('warn\\n'); sys.stdout.write('tail')")
    r = launch("--nproc-per-node", "2", *python(code))
    check("prefix exit", r.returncode == 0, r.stderr)
    for rank in range(2):
        tag = f"[rank {rank}] "
        out = [l for l in r.stdout.splitlines() if l.startswith(tag)]
        err = [l for l in r.stderr.splitlines() if l.startswith(tag)]
        check(f"prefix stdout {rank}", out == [tag + "one", tag + "two", tag + "tail"], r.stdout)
        check(f"prefix stderr {rank}", err == [tag + "warn"], r.stderr)
    check("prefix every line", len(r.stdout.splitlines()) == 6 and len(r.stderr.splitlines()) == 2,
          (r.stdout, r.stderr))
    check("prefix final newline", r.stdout.endswith("\n"), r.stdout)


def test_failing_rank_stops_the_others():
    pids = pid_file()
    r = launch("--nproc-per-node", "3", *python(SLEEPER, pids, "fail-rank-1"))
    check("failure exit", r.returncode not in (0, 2), f"exit {r.returncode}")
    check("failure names rank", last_line(r.stderr) == "rankmesh launch: rank 1 exited with status 3",
          r.stderr)
    check("failure stops siblings by SIGTERM",
          "[rank 0] got SIGTERM" in r.stdout and "[rank 2] got SIGTERM" in r.stdout, r.stdout)
    check("failure leaves nothing", all_gone(read_pids(pids, 3, within=0)))


def test_killed_rank_is_named():
    pids = pid_file()
    r = launch("--nproc-per-node", "3", *python(SLEEPER, pids, "kill-rank-2"))
    check("signal exit", r.returncode not in (0, 2), f"exit {r.returncode}")
    check("signal names rank",
          last_line(r.stderr) == "rankmesh launch: rank 2 was killed by signal 9 (SIGKILL)", r.stderr)
    check("signal leaves nothing", all_gone(read_pids(pids, 3, within=0)))


def test_sigkill_after_grace():
    # Ranks that ignore SIGTERM are killed once the grace period is over (5 s, scaled to 1 s
    # here); they would sleep for 60 s otherwise, past launch()'s deadline.
    pids = pid_file()
    r = launch("--timeout-s", "1", "--nproc-per-node", "2", *python(SLEEPER, pids, "ignore-term"),
               env=environment(SHORT_GRACE))
    check("grace exit", r.returncode == 124, f"exit {r.returncode}: {r.stderr}")
    check("grace names timeout", last_line(r.stderr) == "rankmesh launch: timed out after 1 s; stopped every rank",
          r.stderr)
    check("grace leaves nothing", all_gone(read_pids(pids, 2, within=0)))


def test_forwarded_signal(sig):
    name = signal.Signals(sig).name
    pids = pid_file()
    proc = subprocess.Popen([BINARY, "launch", "--nproc-per-node", "2", *python(SLEEPER, pids)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    launchers.append(proc)
    ranks = read_pids(pids, 2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=scaled(15))
    check(f"{name} exit", proc.returncode == 128 + sig, f"exit {proc.returncode}")
    check(f"{name} forwarded", f"[rank 0] got {name}" in out and f"[rank 1] got {name}" in out, out)
    check(f"{name} reported", last_line(err) == f"rankmesh launch: received {name}; stopped every rank", err)
    check(f"{name} leaves nothing", all_gone(ranks))


def test_sigkill_of_the_launcher():
    # The ranks ignore SIGTERM: only their supervisors can end them.
    pids = pid_file()
    proc = subprocess.Popen([BINARY, "launch", "--nproc-per-node", "3", *python(SLEEPER, pids, "ignore-term")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launchers.append(proc)
    ranks = read_pids(pids, 3)
    check("launcher SIGKILL ranks running", all(alive(p) for p in ranks), ranks)
    proc.kill()
    proc.wait(timeout=scaled(10))
    check("launcher SIGKILL leaves no orphan", all_gone(ranks),
          [p for p in ranks if alive(p)])


def test_sigkill_of_the_launcher_ends_every_tree():
    # Each rank has a child in its group and a daemon outside it; nothing of the run survives a
    # SIGKILL of the launcher: not the supervisors, ranks, children, nor daemons.
    marker, pids = unique_marker(), pid_file()
    ranks = 2
    proc = subprocess.Popen([BINARY, "launch", "--nproc-per-node", str(ranks), *python(TREE, marker, pids)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launchers.append(proc)
    read_pids(pids, ranks)
    # The launcher, a supervisor, a rank, its child and its daemon per rank.
    check("tree started", wait_until(lambda: len(marked(marker)) == 1 + 4 * ranks, within=10),
          f"{len(marked(marker))} processes, want {1 + 4 * ranks}")
    proc.kill()
    proc.wait(timeout=scaled(10))
    check("launcher SIGKILL ends every tree", wait_until(lambda: not marked(marker), within=10),
          f"still running: {marked(marker)}")


def test_sigkill_of_the_launcher_during_startup():
    # Killed while rank 0 has its tree and the other ranks are still starting up.
    marker, pids = unique_marker(), pid_file()
    proc = subprocess.Popen([BINARY, "launch", "--nproc-per-node", "3", *python(TREE, marker, pids, "rank-0-only")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    launchers.append(proc)
    read_pids(pids, 1)
    proc.kill()
    proc.wait(timeout=scaled(10))
    check("launcher SIGKILL during the ranks' start-up ends everything",
          wait_until(lambda: not marked(marker), within=10), f"still running: {marked(marker)}")

    # Killed as soon as it has a child, while it is still starting the others: whatever got
    # started ends (the supervisors' race with their parent's death). A few times, as the
    # moment differs from run to run.
    for _ in range(3):
        marker = unique_marker()
        proc = subprocess.Popen([BINARY, "launch", "--nproc-per-node", "4", *python(TREE, marker, pid_file())],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        launchers.append(proc)

        def has_child():
            return any(parent_of(p) == proc.pid for p in marked(marker))

        check("start-up child seen", wait_until(has_child, within=10), "the launcher started nothing")
        proc.kill()
        proc.wait(timeout=scaled(10))
        check("launcher SIGKILL during its start-up ends everything",
              wait_until(lambda: not marked(marker), within=10), f"still running: {marked(marker)}")


def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def test_descendants_are_swept():
    # A rank that leaves a background process behind: it dies when the rank ends.
    r = launch(*["--", "/bin/sh", "-c", "sleep 60 & echo $!"])
    check("sweep exit", r.returncode == 0, r.stderr)
    pid = int(r.stdout.split()[-1]) if r.stdout.split() else 0
    spawned.append((pid, "sleep"))
    check("sweep kills leftovers", pid > 0 and all_gone([pid]), r.stdout)


def test_timeout_with_a_stalled_reader():
    # The ranks write without end and nobody reads the launcher's stdout: the timeout still ends
    # the run (its 1 s, the grace scaled to 1 s, a second of drain and one for the last line).
    code = "import sys\nwhile True: sys.stdout.write('x' * 999 + '\\n')"
    err_path = os.path.join(tmp.name, f"stalled-{unique_marker()}.err")
    with open(err_path, "w") as err:
        proc = subprocess.Popen([BINARY, "launch", "--timeout-s", "1", "--nproc-per-node", "2", *python(code)],
                                stdout=subprocess.PIPE, stderr=err, env=environment(SHORT_GRACE))
    launchers.append(proc)
    try:
        proc.wait(timeout=scaled(1 + 1 + 1 + 1 + 10))
    except subprocess.TimeoutExpired:
        failures.append("stalled reader: the launcher did not end within its timeout")
        proc.kill()
        proc.wait()
    proc.stdout.close()
    with open(err_path) as f:
        err_text = f.read()
    check("stalled reader exit", proc.returncode == 124, f"exit {proc.returncode}: {err_text[-300:]}")
    check("stalled reader names timeout",
          last_line(err_text) == "rankmesh launch: timed out after 1 s; stopped every rank", err_text[-300:])


def test_timeout():
    pids = pid_file()
    r = launch("--timeout-s", "1", *python(SLEEPER, pids))
    check("timeout exit", r.returncode == 124, f"exit {r.returncode}")
    check("timeout named", last_line(r.stderr) == "rankmesh launch: timed out after 1 s; stopped every rank",
          r.stderr)
    check("timeout leaves nothing", all_gone(read_pids(pids, 1, within=0)))


def test_success_and_exec_failure():
    r = launch("--nproc-per-node", "4", "--", "true")
    check("success exit", (r.returncode, r.stdout, r.stderr) == (0, "", ""), r)
    r = launch("--", "/nonexistent/program")
    check("exec failure exit", r.returncode == 1, f"exit {r.returncode}")
    check("exec failure reason", "[rank 0] rankmesh launch: cannot execute '/nonexistent/program'" in r.stderr,
          r.stderr)
    check("exec failure named", last_line(r.stderr) == "rankmesh launch: rank 0 exited with status 127",
          r.stderr)


def test_secret():
    # Without a secret one node makes one: 64 hex digits, the same for every rank, new each run,
    # and never printed by the launcher.
    show = ("import os, hashlib; s = os.environ.get('RANKMESH_SECRET'); "
            "print(None if s is None else (len(s), all(c in '0123456789abcdef' for c in s), "
            "hashlib.sha256(s.encode()).hexdigest()))")
    no_secret = environment(unset=("RANKMESH_SECRET", "RANKMESH_SECRET_FILE"))
    digests = []
    for _ in range(2):
        r = launch("--nproc-per-node", "2", *python(show), env=no_secret)
        check("secret exit", r.returncode == 0 and r.stderr == "", r.stderr)
        seen = {line.split("] ", 1)[1] for line in r.stdout.splitlines()}
        check("secret shared", len(seen) == 1, seen)
        value = seen.pop() if seen else ""
        check("secret form", value.startswith("(64, True, "), value)
        digests.append(value)
    check("secret fresh", len(set(digests)) == 2, digests)

    given = environment({"RANKMESH_SECRET": "operator-secret"}, unset=("RANKMESH_SECRET_FILE",))
    r = launch(*python("import os; print(os.environ['RANKMESH_SECRET'])"), env=given)
    check("secret passed through", r.stdout == "[rank 0] operator-secret\n", r.stdout)

    from_file = environment({"RANKMESH_SECRET_FILE": "/etc/rankmesh/secret"}, unset=("RANKMESH_SECRET",))
    r = launch(*python("import os; print(os.environ.get('RANKMESH_SECRET'), os.environ['RANKMESH_SECRET_FILE'])"),
               env=from_file)
    check("secret file passed through", r.stdout == "[rank 0] None /etc/rankmesh/secret\n", r.stdout)

    expect_usage_error("secret needed for nodes",
                       ["--nnodes", "2", "--master-port", "29500", "--", "true"], "RANKMESH_SECRET",
                       env=no_secret)


def test_usage_errors():
    expect_usage_error("no separator", ["true"], "--")
    expect_usage_error("no program", ["--nproc-per-node", "2", "--"], "PROGRAM")
    expect_usage_error("zero processes", ["--nproc-per-node", "0", "--", "true"], "--nproc-per-node")
    expect_usage_error("not a number", ["--nproc-per-node", "two", "--", "true"], "two")
    expect_usage_error("unknown flag", ["--bogus", "--", "true"], "--bogus")
    expect_usage_error("missing value", ["--nnodes", "--", "true"], "--nnodes")
    expect_usage_error("nodes need a port", ["--nnodes", "2", "--", "true"], "--master-port")
    expect_usage_error("node rank out of range", ["--nnodes", "2", "--node-rank", "2", "--master-port", "1",
                                                  "--", "true"], "--node-rank")
    expect_usage_error("port out of range", ["--master-port", "70000", "--", "true"], "70000")


try:
    test_environment()
    test_registry_socket_handed_to_rank_0()
    test_output_prefixes()
    test_failing_rank_stops_the_others()
    test_killed_rank_is_named()
    test_sigkill_after_grace()
    for forwarded in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        test_forwarded_signal(forwarded)
    test_sigkill_of_the_launcher()
    test_sigkill_of_the_launcher_ends_every_tree()
    test_sigkill_of_the_launcher_during_startup()
    test_descendants_are_swept()
    test_timeout()
    test_timeout_with_a_stalled_reader()
    test_success_and_exec_failure()
    test_secret()
    test_usage_errors()
finally:
    for proc in launchers:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=scaled(10))
    spawned.extend((pid, marker) for marker in markers for pid in marked(marker))
    for pid, marker in spawned:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                ours = marker.encode() in f.read()
        except FileNotFoundError:
            continue
        if ours and alive(pid):
            failures.append(f"pid {pid} outlived its launcher")
            os.kill(pid, signal.SIGKILL)
    tmp.cleanup()

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("launch: all checks passed")
