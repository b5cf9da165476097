"""rankmesh.Runtime and the exceptions: binding threads to ranks, rt.run's results and errors,
timeouts, mismatches, aborts, not-initialized state, invalid arguments, fork and interpreter exit."""
import datetime
import os
import select
import subprocess
import threading
import time

import pytest
import torch

from conftest import NOT_BUILT

rankmesh = pytest.importorskip("rankmesh", reason=NOT_BUILT)
D = pytest.importorskip("rankmesh.distributed", reason=NOT_BUILT)

PYTHON = "/usr/bin/python3"


def world():
    """Joins (in a thread bound to a rank: checks) and returns the world group, as vLLM code does."""
    D.init_distributed_environment()
    return D.get_world_group()


def test_exception_hierarchy():
    assert issubclass(rankmesh.Error, RuntimeError)
    assert issubclass(rankmesh.TimeoutError, rankmesh.Error)
    assert issubclass(rankmesh.TimeoutError, TimeoutError)  # builtins.TimeoutError
    assert issubclass(rankmesh.PeerLostError, rankmesh.Error)
    assert issubclass(rankmesh.MismatchError, rankmesh.Error)
    assert issubclass(rankmesh.InvalidArgumentError, rankmesh.Error)
    assert issubclass(rankmesh.InvalidArgumentError, ValueError)
    for cls in (rankmesh.PeerLostError, rankmesh.MismatchError):
        assert not issubclass(cls, TimeoutError) and not issubclass(cls, ValueError)


def test_runtime_basics():
    rt = rankmesh.Runtime(3)
    try:
        assert rt.world_size == 3
        assert list(rt.local_ranks) == [0, 1, 2]

        together = threading.Barrier(3, timeout=10)

        def fn(a, b):
            together.wait()  # all three alive at once, so their idents are distinct
            return (world().rank, a + b, threading.get_ident())

        results = rt.run(fn, 1, 2)
        assert [r[:2] for r in results] == [(0, 3), (1, 3), (2, 3)]
        assert len({r[2] for r in results}) == 3, "each rank runs on a thread of its own"
    finally:
        rt.close()
        rt.close()  # idempotent
    with rankmesh.Runtime(world_size=2, timeout=datetime.timedelta(seconds=3)) as rt2:
        assert rt2.run(lambda: world().timeout) == [datetime.timedelta(seconds=3)] * 2


def test_default_and_configured_timeouts():
    with rankmesh.Runtime(2) as rt:
        assert rt.run(lambda: world().timeout) == [datetime.timedelta(seconds=30)] * 2
    with rankmesh.Runtime(2, timeout=2.0) as rt:
        assert rt.run(lambda: world().timeout) == [datetime.timedelta(seconds=2)] * 2

        def fn():
            D.init_distributed_environment(timeout=datetime.timedelta(seconds=5))
            D.initialize_model_parallel(2, 1)
            return D.get_world_group().timeout, D.get_tp_group().timeout

        five = datetime.timedelta(seconds=5)
        assert rt.run(fn) == [(five, five)] * 2


def test_run_reraises_the_first_raised_after_all_finished():
    """rt.run re-raises the exception raised first (the cause: the runtime is aborted then, so
    ranks waiting on the failed one fail with PeerLostError instead of waiting out their
    timeout), once every rank has finished."""
    finished = []
    waited = []

    def fn():
        r = world().rank
        if r == 2:
            raise ValueError("from rank 2")  # raised first
        if r == 1:
            start = time.monotonic()
            try:
                world().recv_object(2)  # never sent: ends when rank 2's failure aborts the runtime
            except rankmesh.PeerLostError:
                waited.append(time.monotonic() - start)
            raise KeyError("from rank 1")  # later: not the one re-raised
        time.sleep(0.4)
        finished.append(r)
        return r

    with rankmesh.Runtime(3, timeout=20.0) as rt:
        with pytest.raises(ValueError, match="from rank 2"):
            rt.run(fn)
        assert finished == [0], "rt.run re-raises only after every rank finished"
        assert len(waited) == 1 and waited[0] < 10.0, f"rank 1 waited {waited} s for a failed rank"


def test_rank_binding_with_own_threads():
    """`with rt.rank(r)` binds the calling thread; the module-level functions act for rank r."""
    out = {}

    def body(rt, r):
        with rt.rank(r):
            D.init_distributed_environment(world_size=2, rank=r, local_rank=r)
            D.initialize_model_parallel(2, 1)
            out[r] = D.tensor_model_parallel_all_reduce(torch.full((3,), float(r + 1)))
            D.destroy_model_parallel()

    with rankmesh.Runtime(2, timeout=10.0) as rt:
        threads = [threading.Thread(target=body, args=(rt, r)) for r in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads)
        for r in range(2):
            assert torch.equal(out[r], torch.full((3,), 3.0))


def test_invalid_runtime_use():
    with pytest.raises(rankmesh.InvalidArgumentError):
        rankmesh.Runtime(2, transport="bogus")
    with pytest.raises(rankmesh.Error):
        rankmesh.Runtime(0)
    with rankmesh.Runtime(2) as rt:
        with pytest.raises(rankmesh.InvalidArgumentError):
            with rt.rank(2):
                pass
        with pytest.raises(rankmesh.InvalidArgumentError):
            with rt.rank(-1):
                pass

        def wrong_world():
            with pytest.raises(rankmesh.Error):
                D.init_distributed_environment(world_size=3)
            r = world().rank
            with pytest.raises(rankmesh.Error):
                D.init_distributed_environment(world_size=2, rank=1 - r)
            D.init_distributed_environment(world_size=2, rank=r)  # agreeing: fine
            return True

        assert rt.run(wrong_world) == [True, True]


def test_not_initialized():
    def fn():
        D.init_distributed_environment()
        assert D.model_parallel_is_initialized() is False
        codes = []
        for getter in (D.get_tp_group, D.get_pp_group, D.get_dp_group, D.get_ep_group, D.get_dcp_group,
                       D.get_pcp_group, D.get_tensor_model_parallel_world_size,
                       D.get_tensor_model_parallel_rank):
            with pytest.raises(rankmesh.Error) as e:
                getter()
            codes.append(e.value.code)
        D.get_world_group()  # the world group always exists
        D.initialize_model_parallel(1, 2)
        D.destroy_model_parallel()
        with pytest.raises(rankmesh.Error):
            D.get_tp_group()
        return codes

    with rankmesh.Runtime(2) as rt:
        assert rt.run(fn) == [[7] * 8] * 2


def test_timeout_of_runtime():
    """Runtime(timeout=2.0): a recv nobody answers raises rankmesh.TimeoutError (also a
    builtins.TimeoutError) after about 2 s, naming the operation."""
    def fn():
        w = world()
        if w.rank == 0:
            t0 = time.monotonic()
            with pytest.raises(rankmesh.TimeoutError) as e:
                w.recv((4,), torch.float32, src=1)
            took = time.monotonic() - t0
            assert isinstance(e.value, TimeoutError) and e.value.code == 4
            assert str(e.value), "the message says what timed out"
            return took
        return None

    with rankmesh.Runtime(2, timeout=2.0) as rt:
        took = rt.run(fn)[0]
    assert 1.5 <= took <= 8, took


def test_timeout_of_group_then_usable():
    """A group's timeout property bounds its operations; after a timeout the group stays usable."""
    def fn():
        w = world()
        if w.rank == 0:
            w.timeout = datetime.timedelta(seconds=0.5)
            t0 = time.monotonic()
            try:
                w.recv_tensor_dict(src=1)
            except TimeoutError as e:  # builtins.TimeoutError catches it
                assert isinstance(e, rankmesh.TimeoutError)
            else:
                raise AssertionError("no timeout")
            took = time.monotonic() - t0
            w.timeout = datetime.timedelta(seconds=10)
        else:
            took = None
        w.barrier()
        got = w.all_reduce(torch.ones(2))
        assert torch.equal(got, torch.full((2,), 2.0))
        return took

    with rankmesh.Runtime(2, timeout=5.0) as rt:
        took = rt.run(fn)[0]
    assert 0.3 <= took <= 4, took


@pytest.mark.parametrize("case,sides", [
    ("shape", ("all_reduce float32 [4] sum", "all_reduce float32 [5] sum")),
    ("dtype", ("all_reduce float32 [4] sum", "all_reduce int32 [4] sum")),
    ("operation", ("all_reduce float32 [4] sum", "all_gather float32 [4] along dim 0")),
    ("call_site", ("at 'layer0.attn'", "at 'layer1.attn'")),
])
def test_mismatch(case, sides):
    """Ranks disagreeing on a collective (collective consensus): every rank raises
    rankmesh.MismatchError (code 6) naming both requests, not TimeoutError."""
    def fn():
        w = world()
        r = w.rank
        try:
            if case == "shape":
                w.all_reduce(torch.ones(4 + r))
            elif case == "dtype":
                w.all_reduce(torch.ones(4, dtype=torch.float32 if r == 0 else torch.int32))
            elif case == "call_site":
                with rankmesh.call_site(f"layer{r}.attn"):
                    w.all_reduce(torch.ones(4))
            elif r == 0:
                w.all_reduce(torch.ones(4))
            else:
                w.all_gather(torch.ones(4), dim=0)
        except rankmesh.Error as e:
            return type(e).__name__, e.code, str(e)
        return None

    with rankmesh.Runtime(2, timeout=10.0) as rt:  # a timeout would be TimeoutError, not MismatchError
        results = rt.run(fn)
    for r, res in enumerate(results):
        assert res is not None, f"rank {r}: no error"
        assert res[:2] == ("MismatchError", 6), f"rank {r}: {res}"
        for side in sides:
            assert side in res[2], f"rank {r}: {side!r} not in {res[2]}"


def test_call_site_nests_and_refuses_long_tags():
    def fn():
        w = world()
        with rankmesh.call_site("outer"):
            with rankmesh.call_site("inner"):
                w.all_reduce(torch.ones(2))
            w.all_reduce(torch.ones(2))  # back to "outer" on every rank
        return True

    with rankmesh.Runtime(2, timeout=10.0) as rt:
        assert rt.run(fn) == [True, True]
    with pytest.raises(rankmesh.InvalidArgumentError):
        with rankmesh.call_site("x" * 65):
            pass


def test_abort_runtime_and_group():
    """rt.abort(reason) and group.abort(reason) fail a pending recv with PeerLostError carrying
    the reason."""
    def waiter(rt_or_group_abort):
        w = world()
        if w.rank == 1:
            with pytest.raises(rankmesh.PeerLostError) as e:
                w.recv((4,), torch.float32, src=0)
            assert e.value.code == 8
            return str(e.value)
        time.sleep(0.3)
        rt_or_group_abort()
        return None

    with rankmesh.Runtime(2, timeout=10.0) as rt:
        msg = rt.run(waiter, lambda: rt.abort("stopped by the test"))[1]
    assert "stopped by the test" in msg, msg
    with rankmesh.Runtime(2, timeout=10.0) as rt:
        msg = rt.run(waiter, lambda: world().abort("group reason"))[1]
    assert "group reason" in msg, msg


def test_fork_child_refused():
    """A runtime used in a child after fork() raises rankmesh.Error (and does not hang)."""
    rt = rankmesh.Runtime(2, timeout=5.0)
    try:
        rt.run(lambda: world().barrier())
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report, never return into pytest
            os.close(rfd)
            result = b"no error"
            try:
                rt.run(lambda: world().barrier())
            except rankmesh.Error as e:
                result = b"rankmesh.Error: " + str(e).encode()[:200]
            except BaseException as e:  # noqa: BLE001
                result = f"other {type(e).__name__}: {e}".encode()[:200]
            try:
                with rt.rank(0):
                    world().all_reduce(torch.ones(1))
                result += b" | second: no error"
            except rankmesh.Error:
                result += b" | second: rankmesh.Error"
            except BaseException as e:  # noqa: BLE001
                result += f" | second: other {type(e).__name__}".encode()
            os.write(wfd, result)
            os._exit(0)
        os.close(wfd)
        ready, _, _ = select.select([rfd], [], [], 15)
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung using the runtime")
        data = os.read(rfd, 4096).decode()
        os.close(rfd)
        os.waitpid(pid, 0)
        assert data.startswith("rankmesh.Error"), data
        assert data.endswith("second: rankmesh.Error"), data
        # the parent's runtime still works
        assert rt.run(lambda: world().rank) == [0, 1]
    finally:
        rt.close()


def test_interpreter_exit_with_live_runtime(child_env):
    """A script that leaves a runtime open and received tensors alive exits cleanly (atexit
    tears the runtime down before finalization)."""
    code = r"""
import rankmesh, rankmesh.distributed as D, torch
rt = rankmesh.Runtime(2, timeout=5.0)
def fn():
    w = D.get_world_group()
    if w.rank == 0:
        w.send_tensor_dict({"x": torch.arange(1000.0)}, dst=1)
        hs = w.isend_tensor_dict({"y": torch.ones(10)}, dst=1)
        return hs
    d = w.recv_tensor_dict(src=0)
    return d
KEEP = rt.run(fn)
print("exiting", flush=True)
"""
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=child_env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "exiting"


def test_tracing_from_python(tmp_path):
    """A runtime with a trace directory records; recording switches off and on from Python; the
    files are Chrome trace-event JSON with the operations of the run."""
    import json

    def step():
        group = world()
        group.barrier()
        if group.rank_in_group == 0:
            group.send_object("ping", dst=1)
        else:
            assert group.recv_object(src=0) == "ping"

    with rankmesh.Runtime(2, trace_dir=str(tmp_path)) as rt:
        rt.run(step)
        state = rt.state(1)
        assert state.tracing
        path = state.flush_trace()
        events = json.load(open(path))["traceEvents"]
        names = [e["name"] for e in events if e["ph"] == "X"]
        assert names.count("barrier") == 1 and names.count("recv_object") == 1
        state.tracing = False
        rt.run(lambda: world().barrier())
        recorded = json.load(open(state.flush_trace()))["otherData"]["recorded"]
        assert recorded == len(names)
        state.tracing = True
        dump = state.dump_trace()
        assert ".dump-0." in dump and os.path.exists(dump)
    assert os.path.exists(tmp_path / "rank-0.trace.json")  # written at shutdown
