"""rankmesh.distributed against the path vLLM takes today on CPU: torch.distributed over gloo.

usage: /usr/bin/python3 bench/python_vs_gloo.py [--quick] [--json FILE] [--build-dir DIR]
                                                [--only gloo,rankmesh,cxx] [--timeout-s S]

Measures, on 2 processes: the benchmark's small dict (4 float32 tensors of 256 B, an int and a
float) sent to rank 1 and back (dict_roundtrip), a dict of one tensor sent one way until a small
acknowledgement returns (p2p_latency at 8 B .. 2 MiB, and 64 MiB, also given in GB/s as
dict_one_way); on 2 and 4 processes: all_reduce of 16 MiB of float32 (per iteration the slowest
rank's time, after a barrier). Twice, the same code over two communicators:
  gloo             the way vLLM's GroupCoordinator does it on CPU: send_tensor_dict pickles the
                   metadata list and sends it with send_object (a size tensor, then a bytes
                   tensor), then one torch.distributed.send per tensor; all_reduce in place through
                   gloo. Processes started here (MASTER_ADDR=127.0.0.1, a free port).
  rankmesh-python  rankmesh.distributed, the same vLLM calls, under `rankmesh launch` (shm).
and, for the Python overhead, the C++ small-dict round trip: `rankmesh bench --only
dict_roundtrip --transport shm` (launched processes over shm, the same dict), as rankmesh-cxx.

Prints a table (medians, p99 for latencies, gloo/rankmesh ratios, the targets of issue 11) and
writes JSON lines in `rankmesh bench`'s format (name, library, transport, ranks, size, median,
min, max, unit, iterations; plus p99) to FILE for bench/report.py --python. A half that fails is
written as {name, library, transport, ranks, error} and the exit status is 1. Every process it
starts runs in a session of its own and is killed (by its process group) at the time limit.
"""
import argparse
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import namedtuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KiB, MiB = 1 << 10, 1 << 20
PYTHON = "/usr/bin/python3"  # Debian's, with torch; `python3` on PATH may lack it


# ---------------------------------------------------------------------------------------------
# The two communicators: the same five operations, one over gloo the way vLLM does, one over
# rankmesh.distributed.

# vLLM's vllm/distributed/parallel_state.py: what travels in the pickled metadata list.
TensorMetadata = namedtuple("TensorMetadata", ["device", "dtype", "size"])


class Gloo:
    """vLLM's GroupCoordinator on CPU (cpu_group = device_group = a gloo group)."""
    library, transport = "gloo", "tcp"  # gloo on one host talks over loopback TCP

    def __init__(self):
        import torch
        import torch.distributed as dist
        self.torch, self.dist = torch, dist
        dist.init_process_group("gloo", init_method="env://")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    # GroupCoordinator.send_object / recv_object
    def send_object(self, obj, dst):
        torch = self.torch
        object_tensor = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
        size_tensor = torch.tensor([object_tensor.numel()], dtype=torch.long)
        self.dist.send(size_tensor, dst=dst)
        self.dist.send(object_tensor, dst=dst)

    def recv_object(self, src):
        torch = self.torch
        size_tensor = torch.empty(1, dtype=torch.long)
        self.dist.recv(size_tensor, src=src)
        object_tensor = torch.empty(size_tensor.item(), dtype=torch.uint8)
        self.dist.recv(object_tensor, src=src)
        return pickle.loads(object_tensor.numpy().tobytes())

    # GroupCoordinator.send_tensor_dict / recv_tensor_dict (_split_tensor_dict, CPU tensors)
    def send_tensor_dict(self, tensor_dict, dst):
        metadata_list, tensor_list = [], []
        for key, value in tensor_dict.items():
            if isinstance(value, self.torch.Tensor):
                metadata_list.append((key, TensorMetadata(value.device.type, value.dtype, value.size())))
                tensor_list.append(value)
            else:
                metadata_list.append((key, value))
        self.send_object(metadata_list, dst=dst)
        for tensor in tensor_list:
            if tensor.numel() > 0:
                self.dist.send(tensor, dst=dst)

    def recv_tensor_dict(self, src):
        tensor_dict = {}
        for key, value in self.recv_object(src=src):
            if isinstance(value, TensorMetadata):
                tensor = self.torch.empty(value.size, dtype=value.dtype, device=value.device)
                if tensor.numel() > 0:
                    self.dist.recv(tensor, src=src)
                tensor_dict[key] = tensor
            else:
                tensor_dict[key] = value
        return tensor_dict

    def all_reduce(self, input_):  # vLLM's CPU communicator: in place through gloo
        self.dist.all_reduce(input_)
        return input_

    def barrier(self):
        self.dist.barrier()

    def max_over_ranks(self, values):  # float64 tensor; element-wise max across the ranks
        self.dist.all_reduce(values, op=self.dist.ReduceOp.MAX)
        return values

    def close(self):
        self.dist.destroy_process_group()


class Rankmesh:
    """rankmesh.distributed's world group, called exactly as vLLM code calls its GroupCoordinator."""
    library, transport = "rankmesh-python", "shm"  # the driver forces RANKMESH_TRANSPORT=shm

    def __init__(self):
        import torch
        import rankmesh.distributed as rd
        self.torch, self.rd = torch, rd
        rd.init_distributed_environment()  # `rankmesh launch` set RANK, WORLD_SIZE, ...
        self.group = rd.get_world_group()
        self.rank, self.world_size = self.group.rank_in_group, self.group.world_size
        g = self.group
        self.send_object, self.recv_object = g.send_object, g.recv_object
        self.barrier = g.barrier

    def send_tensor_dict(self, tensor_dict, dst):
        self.group.send_tensor_dict(tensor_dict, dst=dst)

    def recv_tensor_dict(self, src):
        return self.group.recv_tensor_dict(src=src)

    def all_reduce(self, input_):
        return self.group.all_reduce(input_)

    def max_over_ranks(self, values):  # vLLM's all_reduce only sums: gather, then take the max
        gathered = self.group.all_gather(values, dim=0)
        return gathered.view(self.world_size, -1).max(dim=0).values

    def close(self):
        self.rd.destroy_distributed_environment()


# ---------------------------------------------------------------------------------------------
# The patterns, as tools/rankmesh/bench_patterns.cpp times them: point-to-point on the sending
# rank (its clock spans the exchange), collectives after a barrier, per iteration the slowest
# rank's time. Checks run outside the clock.

Plan = namedtuple("Plan", ["warmup", "min_iters", "max_iters", "budget_s"])


def sized(quick, plan):
    return Plan(min(plan.warmup, 2), min(plan.min_iters, 3), min(plan.max_iters, 20), 0.02) if quick else plan


def timed(comm, plan, body):
    """body(i) -> nanoseconds; warm-up, then as many iterations as fit the budget at the slowest
    rank's warm-up pace (within bounds), the same number on every rank."""
    torch = comm.torch
    start = time.perf_counter_ns()
    for i in range(plan.warmup):
        body(i)
    pace = (time.perf_counter_ns() - start) / max(plan.warmup, 1)
    slowest = float(comm.max_over_ranks(torch.tensor([pace], dtype=torch.float64))[0])
    n = plan.max_iters if slowest <= 0 else int(min(plan.max_iters, plan.budget_s * 1e9 / slowest))
    n = max(plan.min_iters, min(n, plan.max_iters))
    samples = []
    for k in range(n):
        samples.append(body(plan.warmup + k))
    return samples


def summarize(comm, name, size, ns, unit):
    ns = sorted(ns)
    n = len(ns)
    median = ns[n // 2] if n % 2 else (ns[n // 2 - 1] + ns[n // 2]) / 2
    p99 = ns[max(0, math.ceil(0.99 * n) - 1)]
    row = {"name": name, "library": comm.library, "transport": comm.transport,
           "ranks": comm.world_size, "size": size}
    if unit == "GB/s":  # bytes per nanosecond are GB/s
        row.update(median=size / median, min=size / ns[-1], max=size / ns[0])
    else:
        per = 1e3 if unit == "us" else 1e6
        row.update(median=median / per, p99=p99 / per, min=ns[0] / per, max=ns[-1] / per)
    row.update(unit=unit, iterations=n)
    return row


def filled(torch, nbytes, seed):
    return torch.arange(nbytes // 4, dtype=torch.float32).remainder_(1021).add_(seed)


def stamp(t, i):  # the iteration in the first and last 4 bytes: the receiver sees it got this one
    import torch
    ints = t.view(-1).view(dtype=torch.int32)
    ints[0] = i
    ints[-1] = i


def stamped(t, i):
    import torch
    ints = t.view(-1).view(dtype=torch.int32)
    return int(ints[0]) == i and int(ints[-1]) == i


def check(ok, what):
    if not ok:
        raise RuntimeError(what)


def dict_roundtrip(comm, quick):
    torch = comm.torch
    d = {"input_ids": filled(torch, 256, 1), "positions": filled(torch, 256, 2),
         "hidden_states": filled(torch, 256, 3), "residual": filled(torch, 256, 4),
         "step": 0, "temperature": 0.7}

    def body(i):
        if comm.rank == 0:
            d["step"] = i
            start = time.perf_counter_ns()
            comm.send_tensor_dict(d, dst=1)
            back = comm.recv_tensor_dict(src=1)
            took = time.perf_counter_ns() - start
            check(back.keys() == d.keys() and back["step"] == i and back["temperature"] == 0.7
                  and all(torch.equal(back[k], d[k]) for k in ("input_ids", "positions",
                                                              "hidden_states", "residual")),
                  "dict_roundtrip: the dict that came back differs from the one sent")
            return took
        start = time.perf_counter_ns()
        got = comm.recv_tensor_dict(src=0)
        comm.send_tensor_dict(got, dst=0)
        return time.perf_counter_ns() - start

    ns = timed(comm, sized(quick, Plan(200, 200, 20000, 1.0)), body)
    return [summarize(comm, "dict_roundtrip", 4 * 256, ns, "us")]


def one_way(comm, quick, nbytes):
    """A dict of one tensor to rank 1, which checks its stamp and acknowledges with an object."""
    torch = comm.torch
    d = {"hidden_states": filled(torch, nbytes, 5)}
    plan = Plan(2, 5, 50, 1.0) if nbytes >= MiB else Plan(50, 100, 5000, 0.3)

    def body(i):
        if comm.rank == 0:
            stamp(d["hidden_states"], i)  # vLLM callers overwrite their tensors between sends
            start = time.perf_counter_ns()
            comm.send_tensor_dict(d, dst=1)
            ack = comm.recv_object(src=1)
            took = time.perf_counter_ns() - start
            check(ack == i, f"p2p {nbytes} B: acknowledgement {i} did not come back")
            return took
        start = time.perf_counter_ns()
        got = comm.recv_tensor_dict(src=0)
        comm.send_object(i, dst=0)
        took = time.perf_counter_ns() - start
        # Checked after the acknowledgement: Python's few µs stay off the sender's clock.
        check(stamped(got["hidden_states"], i), f"p2p {nbytes} B: iteration {i} received stale bytes")
        return took

    return timed(comm, sized(quick, plan), body)


def all_reduce(comm, quick):
    torch = comm.torch
    n, r = comm.world_size, comm.rank
    nbytes = 64 * KiB if quick else 16 * MiB
    pattern = torch.arange(nbytes // 4).bitwise_and_(7).add_(1).to(torch.float32)
    source = pattern * (r + 1)
    work = torch.empty_like(source)
    want = pattern * (n * (n + 1) // 2)

    def body(i):
        work.copy_(source)  # gloo reduces in place: each iteration starts from the input again
        comm.barrier()
        start = time.perf_counter_ns()
        out = comm.all_reduce(work)
        took = time.perf_counter_ns() - start
        check(out[0] == want[0] and out[-1] == want[-1], "all_reduce: wrong result")
        body.out = out
        return took

    ns = timed(comm, sized(quick, Plan(2, 5, 100, 1.5)), body)
    check(torch.equal(body.out, want), "all_reduce: wrong elements")
    slowest = comm.max_over_ranks(torch.tensor(ns, dtype=torch.float64)).tolist()
    return [summarize(comm, "all_reduce", nbytes, slowest, "ms")]


def worker(kind, quick, out_path):
    comm = Gloo() if kind == "gloo" else Rankmesh()
    rows = []
    if comm.world_size == 2:
        rows += dict_roundtrip(comm, quick)
        big = 64 * KiB if quick else 64 * MiB
        for nbytes in ([8, 4 * KiB] if quick else [8, 512, 32 * KiB, 2 * MiB]) + [big]:
            ns = one_way(comm, quick, nbytes)
            rows.append(summarize(comm, "p2p_latency", nbytes, ns, "us"))
            if nbytes == big:
                rows.append(summarize(comm, "dict_one_way", nbytes, ns, "GB/s"))
    rows += all_reduce(comm, quick)
    comm.barrier()
    comm.close()
    if comm.rank == 0:
        with open(out_path, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------
# The driver: starts each world, bounded in time, and gathers the rows.

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_bounded(procs, timeout_s):
    """Waits for every process (each a session leader); on the deadline kills their process
    groups. Returns None when all exited 0, else why not."""
    deadline = time.monotonic() + timeout_s
    why = None
    for p in procs:
        try:
            rc = p.wait(timeout=max(0.1, deadline - time.monotonic()))
            if rc != 0 and why is None:
                why = f"a process exited with status {rc}" + (" (a time limit)" if rc == 124 else "")
        except subprocess.TimeoutExpired:
            why = why or f"timed out after {timeout_s} s"
            break
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    return why


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_gloo(ranks, quick, timeout_s, out_path):
    port = free_port()
    procs = []
    for r in range(ranks):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                   LOCAL_RANK=str(r), WORLD_SIZE=str(ranks), OMP_NUM_THREADS="1")
        cmd = [PYTHON, os.path.abspath(__file__), "--worker", "gloo", "--out", out_path]
        procs.append(subprocess.Popen(cmd + (["--quick"] if quick else []), env=env,
                                      start_new_session=True))
    return run_bounded(procs, timeout_s)


def run_rankmesh(ranks, quick, timeout_s, out_path, build):
    launcher = os.path.join(build, "tools", "rankmesh", "rankmesh")
    pythonpath = os.path.join(build, "python")
    if not os.path.isdir(os.path.join(pythonpath, "rankmesh")):
        return f"no rankmesh Python package under {pythonpath} (build with pybind11 found)"
    env = dict(os.environ, OMP_NUM_THREADS="1", RANKMESH_TRANSPORT="shm",
               PYTHONPATH=pythonpath + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [launcher, "launch", "--nproc-per-node", str(ranks), "--timeout-s", str(int(timeout_s)),
           "--", PYTHON, os.path.abspath(__file__), "--worker", "rankmesh", "--out", out_path]
    p = subprocess.Popen(cmd + (["--quick"] if quick else []), env=env, start_new_session=True)
    return run_bounded([p], timeout_s + 10)


def run_cxx(quick, timeout_s, build):
    """The C++ small-dict round trip, launched over shm: `rankmesh bench`'s own measurement."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cxx.json")
        cmd = [os.path.join(build, "tools", "rankmesh", "rankmesh"), "bench", "--only",
               "dict_roundtrip", "--transport", "shm", "--json", out,
               "--timeout-s", str(int(timeout_s))] + (["--quick"] if quick else [])
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
        why = run_bounded([p], timeout_s + 10)
        rows = read_rows(out)
    for row in rows:
        row["library"] = "rankmesh-cxx"
    return why, rows


def report_text(json_path):
    """The table as bench/report.py draws it (one implementation), and the verdicts."""
    sys.path.insert(0, HERE)
    import report
    errors = {}
    data = report.load(json_path, errors)
    text, verdicts = report.python_section(data, errors)
    sizes = sorted({k[4] for k in data if k[1] == "p2p_latency"})
    lines = ["| size | rankmesh.distributed (shm), median / p99 µs | gloo, vLLM's path | gloo/rankmesh |",
             "|---|---|---|---|"]
    for size in sizes:
        rm = data.get(("rankmesh-python", "p2p_latency", "shm", 2, size))
        gl = data.get(("gloo", "p2p_latency", "tcp", 2, size))
        c = lambda m: "—" if not m else f"{m['median']:.1f} / {m['p99']:.1f}"
        ratio = f"{gl['median'] / rm['median']:.1f}" if rm and gl else "—"
        lines.append(f"| {report.size_text(size)} | {c(rm)} | {c(gl)} | {ratio} |")
    text += ("\np2p latency, a dict of one tensor until its acknowledgement returns:\n\n"
             + "\n".join(lines) + "\n")
    for (lib, name, t, ranks), error in sorted(errors.items()):
        text += f"\nFAILED: {lib} {name} on {t}, {ranks} ranks: {error}"
    return text, verdicts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few iterations")
    parser.add_argument("--json", help="write the JSON lines to FILE")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    parser.add_argument("--only", default="gloo,rankmesh,cxx")
    parser.add_argument("--timeout-s", type=float, default=120, help="bound on each world")
    parser.add_argument("--worker", choices=["gloo", "rankmesh"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.quick, args.out)
        return 0

    only = set(args.only.split(","))
    build = os.path.abspath(args.build_dir)
    rows, status = [], 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="python_vs_gloo.") as tmp:
        for lib, ranks in (("gloo", 2), ("gloo", 4), ("rankmesh", 2), ("rankmesh", 4)):
            if lib not in only:
                continue
            out = os.path.join(tmp, f"{lib}{ranks}.json")
            print(f"== {lib}, {ranks} processes", flush=True)
            if lib == "gloo":
                why = run_gloo(ranks, args.quick, args.timeout_s, out)
            else:
                why = run_rankmesh(ranks, args.quick, args.timeout_s, out, build)
            got = read_rows(out)
            rows += got
            if why:
                status = 1
                library = "gloo" if lib == "gloo" else "rankmesh-python"
                print(f"python_vs_gloo.py: {library} on {ranks} processes failed: {why}", file=sys.stderr)
                names = ["dict_roundtrip", "p2p_latency", "dict_one_way", "all_reduce"] if ranks == 2 else ["all_reduce"]
                have = {r["name"] for r in got}
                rows += [{"name": n, "library": library, "transport": "tcp" if lib == "gloo" else "shm",
                          "ranks": ranks, "error": why} for n in names if n not in have]
        if "cxx" in only:
            print("== C++ small-dict round trip (rankmesh bench, shm)", flush=True)
            why, got = run_cxx(args.quick, args.timeout_s, build)
            rows += got
            if why or not got:
                status = 1
                print(f"python_vs_gloo.py: rankmesh bench failed: {why or 'no rows'}", file=sys.stderr)
                rows.append({"name": "dict_roundtrip", "library": "rankmesh-cxx", "transport": "shm",
                             "ranks": 2, "error": why or "no rows"})
    with tempfile.TemporaryDirectory() as tmp:
        path = args.json or os.path.join(tmp, "python.json")
        with open(path, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        text, verdicts = report_text(path)
    print()
    print(text)
    print()
    held = sum(1 for _, ok, _ in verdicts if ok)
    print(f"targets holding: {held} of {len(verdicts)}")
    for label, ok, ratio in verdicts:
        print(f"  {'holds  ' if ok else 'not yet'}  {label}: {ratio}")
    print(f"(took {time.monotonic() - started:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
