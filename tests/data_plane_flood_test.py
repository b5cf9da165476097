"""Outsiders cannot keep a world from forming: 200 idle and 200 garbage connections to rank 0's
data-plane port, made before its peers dial it and while they do, and the world of three
still forms over tcp and runs every operation with the results of the in-process runtime.

usage: data_plane_flood_test.py OPS_CHECK
Every process and socket this test opens is closed or killed by pid at the end.
"""
import os
import re
import socket
import subprocess
import sys
import threading
import time

OPS = sys.argv[1]
SCALE = float(os.environ.get("RANKMESH_TIMEOUT_SCALE", "1"))
WORLD = 3


def digest_lines(text):
    return sorted(l for l in text.splitlines() if re.match(r"rank \d+: .* = ", l))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_rank(rank, master_port):
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(master_port),
               RANKMESH_SECRET="s3cret", RANKMESH_TRANSPORT="tcp",
               RANKMESH_JOIN_TIMEOUT_MS=str(int(20000 * SCALE)))
    return subprocess.Popen([OPS, "--world", str(WORLD)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class Rank:
    """A rank's process, its output drained as it comes (a full pipe would stall its logging)."""

    def __init__(self, rank, master_port):
        self.proc = start_rank(rank, master_port)
        self.out, self.err = [], []
        self.cv = threading.Condition()

        def drain(stream, into):
            for line in stream:
                with self.cv:
                    into.append(line)
                    self.cv.notify_all()

        self.drains = [threading.Thread(target=drain, args=(self.proc.stdout, self.out)),
                       threading.Thread(target=drain, args=(self.proc.stderr, self.err))]
        for t in self.drains:
            t.start()
        self.port = self.data_port(20)

    def data_port(self, seconds):
        """The port the rank's stderr names for its data plane, waited for with a deadline."""
        pattern = re.compile(r"data plane listening on [\d.]+:(\d+)")

        def found():
            return next((int(m.group(1)) for m in map(pattern.search, self.err) if m), None)

        with self.cv:
            self.cv.wait_for(lambda: found() is not None, timeout=seconds * SCALE)
            return found()

    def finish(self, seconds):
        code = self.proc.wait(timeout=seconds * SCALE)
        for t in self.drains:
            t.join()
        return code, "".join(self.out), "".join(self.err)


def outsider(port, payload):
    s = socket.socket()
    s.settimeout(5 * SCALE)
    try:
        s.connect(("127.0.0.1", port))
        if payload:
            s.sendall(payload)
    except OSError:
        pass  # dropped by the rank already: that is its right
    return s


procs = []
sockets = []
try:
    reference = subprocess.run([OPS, "--world", str(WORLD)], capture_output=True, text=True,
                               timeout=60 * SCALE)
    assert reference.returncode == 0, reference.stderr
    want = digest_lines(reference.stdout)

    master_port = free_port()
    ranks = [Rank(0, master_port)]
    procs.append(ranks[0].proc)
    port = ranks[0].port
    assert port is not None, "rank 0 did not name its data-plane port"
    sockets += [outsider(port, None) for _ in range(200)]
    flood = threading.Thread(target=lambda: sockets.extend(
        outsider(port, b"GET / HTTP/1.1\r\n\r\n" + os.urandom(64)) for _ in range(200)))
    flood.start()
    for rank in range(1, WORLD):
        ranks.append(Rank(rank, master_port))
        procs.append(ranks[-1].proc)
    flood.join()

    got = []
    failures = []
    for rank, r in enumerate(ranks):
        code, out, err = r.finish(120)
        got += digest_lines(out)
        if code != 0:
            failures.append(f"rank {rank} exited {code}: {err[-1500:]}")
    assert not failures, "\n".join(failures)
    assert sorted(got) == want, "\n".join(sorted(set(got) ^ set(want))[:10])
    print("ok   a world of 3 formed and ran over tcp with 400 outsiders on rank 0's data port")
finally:
    for s in sockets:
        s.close()
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
