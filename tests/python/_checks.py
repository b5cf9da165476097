"""Checks of `rankmesh.distributed` that every rank of a world runs, the same code embedded (one
thread per rank, `Runtime.run`) and launched (one process per rank, `rankmesh launch`).

Each check takes a `Ctx` (who this rank is and which layout is in place) and raises
AssertionError (or the binding's exception) on failure. Every branch depends only on group sizes
and ranks, so all ranks of a world issue matching operations. Expected values come from torch
computations (oracles), never from the binding's own output.
"""
import datetime
import time

import numpy as np
import torch

import rankmesh
import rankmesh.distributed as D


class Ctx:
    def __init__(self, tp, pp, embedded):
        self.tp_size = tp
        self.pp_size = pp
        self.embedded = embedded
        world = D.get_world_group()
        self.rank = world.rank
        self.world_size = world.world_size


class Custom:
    """A value the codec does not carry natively: must come back pickled, equal and of this type."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __eq__(self, other):
        return type(other) is Custom and (self.a, self.b) == (other.a, other.b)

    def __repr__(self):
        return f"Custom({self.a!r}, {self.b!r})"


# Values that travel natively and values that must be pickled; each must come back equal and of
# the same type, recursively (so True never comes back as 1, a tuple never as a list).
NATIVE_VALUES = [None, True, False, 0, -1, 2**63 - 1, -2**63, 1.5, -0.0, float("inf"), "",
                 "ünïcödé", b"", b"\x00\xff\x10", [1, "a", None, [2.5, b"z"]],
                 {"x": {"y": [1, 2]}, "z": "w"}, []]
PICKLED_VALUES = [(1, 2, "three"), {1: "int key", 2: [3]}, 2**80, -2**70, Custom(1, "two"),
                  {"k": (1, 2)}, [1, (2, 3)], {"nested": {3: 4}}, {1.5, 2}, frozenset({1})]


def typed_equal(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(typed_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return (list(a.keys()) == list(b.keys())
                and all(typed_equal(a[k], b[k]) for k in a))
    if isinstance(a, float) and a == 0.0:
        return str(a) == str(b)  # -0.0 stays -0.0
    return a == b


def assert_typed_equal(got, want, what=""):
    assert typed_equal(got, want), f"{what}: got {got!r} ({type(got)}), want {want!r} ({type(want)})"


def assert_tensor(got, want, what=""):
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got)}, want a torch.Tensor"
    want = torch.as_tensor(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.equal(got, want), f"{what}: values differ\n got {got}\nwant {want}"


def layout_groups(world, tp, pp, dp=1):
    """vLLM's layout: arange(world).reshape(-1, dp, pp, pcp, tp), groups by transposition."""
    all_ranks = torch.arange(world).reshape(-1, dp, pp, 1, tp)
    groups = {
        "tp": all_ranks.reshape(-1, tp).unbind(0),
        "pp": all_ranks.transpose(2, 4).reshape(-1, pp).unbind(0),
        "dp": all_ranks.transpose(1, 4).reshape(-1, dp).unbind(0),
        "ep": all_ranks.transpose(1, 2).reshape(-1, dp * tp).unbind(0),
        "dcp": all_ranks.reshape(-1, 1).unbind(0),
        "pcp": all_ranks.transpose(3, 4).reshape(-1, 1).unbind(0),
    }
    return {name: [g.tolist() for g in gs] for name, gs in groups.items()}


def my_group(groups, rank):
    for g in groups:
        if rank in g:
            return g
    raise AssertionError(f"rank {rank} in no group of {groups}")


GETTERS = {"tp": D.get_tp_group, "pp": D.get_pp_group, "dp": D.get_dp_group, "ep": D.get_ep_group,
           "dcp": D.get_dcp_group, "pcp": D.get_pcp_group}


# ---------------------------------------------------------------------------------------------
def check_groups(c):
    world = D.get_world_group()
    assert world.ranks == list(range(c.world_size)), world.ranks
    assert world.rank_in_group == c.rank
    assert isinstance(world.unique_name, str) and world.unique_name.split(":")[0] == "world", world.unique_name
    expected = layout_groups(c.world_size, c.tp_size, c.pp_size)
    names = set()
    for name, getter in GETTERS.items():
        g = getter()
        ranks = my_group(expected[name], c.rank)
        assert g.ranks == ranks, f"{name}: ranks {g.ranks} != {ranks}"
        assert g.rank == c.rank, f"{name}: rank {g.rank}"
        assert g.world_size == len(ranks), f"{name}: world_size {g.world_size}"
        assert g.rank_in_group == ranks.index(c.rank), f"{name}: rank_in_group {g.rank_in_group}"
        assert g.first_rank == ranks[0] and g.last_rank == ranks[-1], name
        assert g.is_first_rank == (c.rank == ranks[0]), name
        assert g.is_last_rank == (c.rank == ranks[-1]), name
        i = ranks.index(c.rank)
        assert g.next_rank == ranks[(i + 1) % len(ranks)], f"{name}: next_rank {g.next_rank}"
        assert g.prev_rank == ranks[(i - 1) % len(ranks)], f"{name}: prev_rank {g.prev_rank}"
        assert isinstance(g.local_rank, int)
        assert g.unique_name.split(":")[0] == name, f"{name}: unique_name {g.unique_name!r}"
        names.add(g.unique_name)
    assert len(names) == len(GETTERS), names
    assert D.model_parallel_is_initialized() is True
    assert D.get_tensor_model_parallel_world_size() == c.tp_size
    assert D.get_tensor_model_parallel_rank() == my_group(expected["tp"], c.rank).index(c.rank)
    assert D.get_decode_context_model_parallel_world_size() == 1
    assert D.get_decode_context_model_parallel_rank() == 0
    assert D.get_node_count() == 1
    assert D.is_global_first_rank() == (c.rank == 0)
    assert D.is_local_first_rank() == (world.local_rank == 0)
    # the same sizes again: a no-op
    D.ensure_model_parallel_initialized(c.tp_size, c.pp_size)
    assert D.get_tp_group().ranks == my_group(expected["tp"], c.rank)


def check_local_rank(c):
    import os
    world = D.get_world_group()
    want = int(os.environ["LOCAL_RANK"]) if not c.embedded and "LOCAL_RANK" in os.environ else c.rank
    assert world.local_rank == want, (world.local_rank, want)
    assert D.get_tp_group().local_rank == want


def check_all_reduce(c):
    # vLLM's test_comm_ops: arange(8) * (r + 1) over the TP group.
    tp = D.get_tp_group()
    t = torch.arange(8, dtype=torch.float32) * (tp.rank_in_group + 1)
    out = D.tensor_model_parallel_all_reduce(t)
    if tp.world_size == 1:
        assert out is t
        return
    want = torch.stack([torch.arange(8, dtype=torch.float32) * (r + 1) for r in range(tp.world_size)]).sum(0)
    assert_tensor(out, want, "tp all_reduce")
    # the world group and the PP group, another shape
    for g in (D.get_world_group(), D.get_pp_group()):
        x = torch.arange(12, dtype=torch.int64).reshape(3, 4) + 100 * g.rank_in_group
        got = g.all_reduce(x)
        if g.world_size == 1:
            assert got is x
            continue
        want = sum(torch.arange(12, dtype=torch.int64).reshape(3, 4) + 100 * r for r in range(g.world_size))
        assert_tensor(got, want, f"{g.unique_name} all_reduce")


def _gather_inputs(n):
    return [torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) * (r + 1) for r in range(n)]


def check_all_gather(c):
    tp = D.get_tp_group()
    for dim in (0, 1, 2, -1, -2, -3):
        inputs = _gather_inputs(tp.world_size)
        t = inputs[tp.rank_in_group]
        out = D.tensor_model_parallel_all_gather(t, dim)
        if tp.world_size == 1:
            assert out is t
            continue
        assert_tensor(out, torch.cat(inputs, dim=dim), f"all_gather dim={dim}")
    # default dim is -1
    inputs = _gather_inputs(tp.world_size)
    out = tp.all_gather(inputs[tp.rank_in_group])
    if tp.world_size > 1:
        assert_tensor(out, torch.cat(inputs, dim=-1), "all_gather default dim")
    world = D.get_world_group()
    x = torch.full((1, 2), world.rank_in_group, dtype=torch.int32)
    out = world.all_gather(x, dim=0)
    if world.world_size > 1:
        assert_tensor(out, torch.arange(world.world_size, dtype=torch.int32).repeat_interleave(2).reshape(-1, 2))


def check_reduce_scatter(c):
    tp = D.get_tp_group()
    n = tp.world_size
    r = tp.rank_in_group
    # vLLM's: arange(8) * (r + 1), dim 0
    inputs = [torch.arange(8, dtype=torch.float32) * (i + 1) for i in range(n)]
    out = D.tensor_model_parallel_reduce_scatter(inputs[r], 0)
    if n == 1:
        assert out is inputs[r]
    else:
        total = torch.stack(inputs).sum(0)
        p = 8 // n
        assert_tensor(out, total[r * p:(r + 1) * p], "reduce_scatter dim 0")
    # 2-D and 3-D, along each dimension (mathematical oracle: sum, then chunk along dim)
    for shape, dim in (((4, 8), 0), ((4, 8), -1), ((4, 8), 1), ((2, 4, 8), 1), ((2, 3, 8), 2),
                       ((2, 3, 8), -1)):
        inputs = [torch.arange(int(np.prod(shape)), dtype=torch.float64).reshape(shape) * (i + 1) + i
                  for i in range(n)]
        out = tp.reduce_scatter(inputs[r], dim=dim)
        if n == 1:
            assert out is inputs[r]
            continue
        want = torch.stack(inputs).sum(0).chunk(n, dim=dim)[r]
        assert_tensor(out, want.contiguous(), f"reduce_scatter shape={shape} dim={dim}")
    # default dim -1
    x = torch.ones(2, 4 * n, dtype=torch.int64) * (r + 1)
    out = tp.reduce_scatter(x)
    if n > 1:
        assert_tensor(out, torch.full((2, 4), n * (n + 1) // 2, dtype=torch.int64), "reduce_scatter default dim")


def check_gather(c):
    tp = D.get_tp_group()
    n, r = tp.world_size, tp.rank_in_group
    inputs = [torch.arange(6, dtype=torch.float32).reshape(2, 3) + 10 * i for i in range(n)]
    out = D.tensor_model_parallel_gather(inputs[r])  # dst=0, dim=-1
    if n == 1:
        assert out is inputs[r]
    elif r == 0:
        assert_tensor(out, torch.cat(inputs, dim=-1), "gather dst=0")
    else:
        assert out is None, f"gather on a non-destination returned {type(out)}"
    world = D.get_world_group()
    n, r = world.world_size, world.rank_in_group
    inputs = [torch.full((1, 2), i, dtype=torch.int16) for i in range(n)]
    out = world.gather(inputs[r], dst=n - 1, dim=0)
    if n == 1:
        assert out is inputs[r]
    elif r == n - 1:
        assert_tensor(out, torch.cat(inputs, dim=0), "gather dst=last")
    else:
        assert out is None


def check_all_gatherv(c):
    world = D.get_world_group()
    n, r = world.world_size, world.rank_in_group
    sizes = [i + 1 for i in range(n)]
    inputs = [torch.full((i + 1, 3), float(i)) for i in range(n)]
    out = world.all_gatherv(inputs[r], dim=0, sizes=sizes)
    assert_tensor(out, torch.cat(inputs, dim=0), "all_gatherv sizes")
    # a list of tensors gives a list
    inputs2 = [torch.arange(2 * (i + 1), dtype=torch.int32).reshape(i + 1, 2) for i in range(n)]
    outs = world.all_gatherv([inputs[r], inputs2[r]], sizes=sizes)
    assert isinstance(outs, list) and len(outs) == 2, type(outs)
    assert_tensor(outs[0], torch.cat(inputs, dim=0), "all_gatherv list[0]")
    assert_tensor(outs[1], torch.cat(inputs2, dim=0), "all_gatherv list[1]")
    # equal shapes, sizes None
    eq = [torch.full((2, 2), i, dtype=torch.int64) for i in range(n)]
    assert_tensor(world.all_gatherv(eq[r]), torch.cat(eq, dim=0), "all_gatherv sizes=None")


def check_reduce_scatterv(c):
    world = D.get_world_group()
    n, r = world.world_size, world.rank_in_group
    sizes = [i + 1 for i in range(n)]
    total = sum(sizes)
    inputs = [torch.arange(total * 2, dtype=torch.float32).reshape(total, 2) * (i + 1) for i in range(n)]
    out = world.reduce_scatterv(inputs[r], dim=0, sizes=sizes)
    want = torch.stack(inputs).sum(0).split(sizes, dim=0)[r]
    assert_tensor(out, want, "reduce_scatterv dim 0")
    inputs = [torch.arange(total * 2, dtype=torch.int64).reshape(2, total) + i for i in range(n)]
    out = world.reduce_scatterv(inputs[r], sizes=sizes)  # default dim -1
    want = torch.stack(inputs).sum(0).split(sizes, dim=-1)[r].contiguous()
    assert_tensor(out, want, "reduce_scatterv dim -1")


def check_broadcast(c):
    for g in (D.get_world_group(), D.get_tp_group()):
        n, r = g.world_size, g.rank_in_group
        for src in sorted({0, n - 1}):
            want = torch.arange(10, dtype=torch.float32) * (src + 3)
            t = want.clone() if r == src else torch.zeros(10)
            out = g.broadcast(t, src=src)
            assert out is t, "broadcast must return input_ itself"
            assert_tensor(t, want, f"{g.unique_name} broadcast src={src} (in place)")
        # default src 0
        t = torch.full((3,), 5, dtype=torch.int8) if r == 0 else torch.zeros(3, dtype=torch.int8)
        assert g.broadcast(t) is t
        assert_tensor(t, torch.full((3,), 5, dtype=torch.int8))


def check_broadcast_object(c):
    g = D.get_world_group()
    n, r = g.world_size, g.rank_in_group
    for i, value in enumerate(NATIVE_VALUES + PICKLED_VALUES):
        src = i % n
        got = g.broadcast_object(value if r == src else None, src=src)
        assert_typed_equal(got, value, f"broadcast_object #{i}")
    got = g.broadcast_object({"default": "src 0"} if r == 0 else None)
    assert_typed_equal(got, {"default": "src 0"})
    # broadcast_object_list: in place, returns the list
    values = NATIVE_VALUES[:6] + PICKLED_VALUES[:5]
    src = n - 1
    lst = list(values) if r == src else [None] * len(values)
    out = g.broadcast_object_list(lst, src=src)
    assert out is lst
    assert_typed_equal(lst, list(values), "broadcast_object_list")
    lst = ["a", (1,)] if r == 0 else [None, None]
    assert g.broadcast_object_list(lst) is lst
    assert_typed_equal(lst, ["a", (1,)])


def check_broadcast_object_source_identity(c):
    """vLLM: the source of broadcast_object gets its own object back (`is`)."""
    g = D.get_world_group()
    value = Custom([1], {"x": (2,)})
    got = g.broadcast_object(value if g.rank_in_group == 0 else None, src=0)
    if g.rank_in_group == 0:
        assert got is value, f"the source got {got!r} (a copy), not its own object"
    else:
        assert_typed_equal(got, value)


def check_send_recv_object(c):
    g = D.get_world_group()
    n, r = g.world_size, g.rank_in_group
    if n == 1:
        return
    values = NATIVE_VALUES + PICKLED_VALUES
    # a chain 0 -> 1 -> ... -> n-1: every rank receives before it sends
    for i, value in enumerate(values):
        if r > 0:
            got = g.recv_object(r - 1)
            assert_typed_equal(got, value, f"recv_object #{i}")
        if r < n - 1:
            assert g.send_object(value, r + 1) is None


def _vllm_dict():
    return {
        "a": torch.arange(8, dtype=torch.float32),
        "b": torch.arange(16, dtype=torch.int8),
        "c": "test",
        "d": [1, 2, 3],
        "e": {"a": 1, "b": 2},
        "f": torch.tensor([], dtype=torch.float32),
    }


def _assert_dict(got, want, what):
    assert isinstance(got, dict), f"{what}: got {type(got)}"
    assert list(got.keys()) == list(want.keys()), f"{what}: keys {list(got)} != {list(want)}"
    for k, v in want.items():
        if isinstance(v, torch.Tensor):
            assert_tensor(got[k], v, f"{what}[{k!r}]")
        elif isinstance(v, np.ndarray):
            assert_tensor(got[k], torch.from_numpy(v) if v.dtype != np.bool_ else torch.from_numpy(v.astype(np.uint8)).bool(), f"{what}[{k!r}]")
        else:
            assert_typed_equal(got[k], v, f"{what}[{k!r}]")


def check_broadcast_tensor_dict(c):
    # vLLM's: from TP rank 0 with the module-level function
    tp = D.get_tp_group()
    if tp.rank_in_group == 0:
        d = _vllm_dict()
        out = D.broadcast_tensor_dict(d, src=0)
        assert out is d, "the source gets its own dict back"
    else:
        out = D.broadcast_tensor_dict(src=0)
        _assert_dict(out, _vllm_dict(), "broadcast_tensor_dict")
    # the world group, from the last rank, values of every kind
    g = D.get_world_group()
    n, r = g.world_size, g.rank_in_group
    want = dict(_vllm_dict())
    for i, v in enumerate(NATIVE_VALUES + PICKLED_VALUES):
        want[f"v{i}"] = v
    out = g.broadcast_tensor_dict(want if r == n - 1 else None, src=n - 1)
    if r == n - 1:
        assert out is want
    else:
        _assert_dict(out, want, "world broadcast_tensor_dict")


def check_send_recv_tensor_dict(c):
    # vLLM's: along the PP group with default src/dst
    pp = D.get_pp_group()
    if pp.world_size == 1:
        return
    d = _vllm_dict()
    recv = None
    if not pp.is_first_rank:
        recv = pp.recv_tensor_dict()
    if not pp.is_last_rank:
        assert pp.send_tensor_dict(d) is None
    if not pp.is_first_rank:
        _assert_dict(recv, _vllm_dict(), "recv_tensor_dict")
    # explicit src/dst, values of every kind, last -> first
    n, r = pp.world_size, pp.rank_in_group
    want = {f"v{i}": v for i, v in enumerate(NATIVE_VALUES + PICKLED_VALUES)}
    want["t"] = torch.arange(5, dtype=torch.int64)
    if r == n - 1:
        pp.send_tensor_dict(want, dst=0)
    elif r == 0:
        _assert_dict(pp.recv_tensor_dict(src=n - 1), want, "recv_tensor_dict src=last")


def check_send_recv(c):
    pp = D.get_pp_group()
    if pp.world_size == 1:
        return
    test_tensor = torch.arange(64, dtype=torch.float32)
    got = None
    if not pp.is_first_rank:
        got = pp.recv(64, dtype=torch.float32)
    if not pp.is_last_rank:
        assert pp.send(test_tensor) is None
    if not pp.is_first_rank:
        assert_tensor(got, test_tensor, "recv")
    # torch.Size, other dtypes, explicit peers
    n, r = pp.world_size, pp.rank_in_group
    for dtype in (torch.int32, torch.bfloat16, torch.bool):
        want = (torch.arange(12).reshape(3, 4) % 3).to(dtype)
        if r == 0:
            pp.send(want, dst=n - 1)
        elif r == n - 1:
            assert_tensor(pp.recv(torch.Size([3, 4]), dtype, src=0), want, f"recv {dtype}")


def _pipeline_dicts(tp_size, tp_rank, stage):
    """What stage `stage` sends. "hidden" and "second" are replicated over TP (send-allgather);
    "private" differs per TP rank and is excluded from all-gather; "odd" has a numel not divisible
    by tp_size."""
    d = {
        "hidden": torch.arange(tp_size * 6, dtype=torch.float32).reshape(tp_size * 2, 3) + 100 * stage,
        "meta": ("tuple", stage),
        "second": torch.arange(tp_size * 4, dtype=torch.int32).reshape(2, tp_size * 2) * (stage + 2),
        "odd": torch.arange(tp_size * 3 + 1, dtype=torch.float64) - stage,
        "private": torch.full((tp_size * 2,), tp_rank + 10 * stage, dtype=torch.int64),
        "empty": torch.empty(0, 3),
        "name": "x",
    }
    return d


def check_send_allgather(c):
    """irecv_tensor_dict with send-allgather over the TP group; each postprocess binds its own key
    (vLLM's late-binding test, with real transfers: two all-gathered keys of different shapes,
    dtypes and values must each end up equal to what was sent)."""
    pp, tp = D.get_pp_group(), D.get_tp_group()
    if pp.world_size == 1:
        return
    s, t = pp.rank_in_group, tp.rank_in_group
    flags = {"private": False}
    # non-blocking: every stage but the first receives, every stage but the last sends
    td = handles = post = None
    if not pp.is_first_rank:
        result = pp.irecv_tensor_dict(all_gather_group=tp, all_gather_tensors=flags)
        assert isinstance(result, tuple) and len(result) == 3, type(result)
        td, handles, post = result
        assert isinstance(handles, list), type(handles)
        assert all(hasattr(h, "wait") for h in handles)
        # vLLM returns a list; any sequence of callables iterates the same way
        assert hasattr(post, "__len__") and hasattr(post, "__iter__"), type(post)
    send_handles = []
    if not pp.is_last_rank:
        send_handles = pp.isend_tensor_dict(_pipeline_dicts(tp.world_size, t, s), all_gather_group=tp,
                                            all_gather_tensors=flags)
        assert isinstance(send_handles, list)
    if not pp.is_first_rank:
        for h in handles:
            h.wait()
        assert all(callable(f) for f in post)
        for f in post:
            f()
        want = _pipeline_dicts(tp.world_size, t, s - 1)
        _assert_dict(td, want, "irecv_tensor_dict send-allgather")
    for h in send_handles:
        h.wait()
    # blocking forms with the same map; last -> first
    n = pp.world_size
    if s == n - 1:
        assert pp.send_tensor_dict(_pipeline_dicts(tp.world_size, t, 7), dst=0, all_gather_group=tp,
                                   all_gather_tensors=flags) is None
    elif s == 0:
        got = pp.recv_tensor_dict(src=n - 1, all_gather_group=tp, all_gather_tensors=flags)
        _assert_dict(got, _pipeline_dicts(tp.world_size, t, 7), "recv_tensor_dict send-allgather")
    # without all_gather_tensors: "private" would be all-gathered, so send replicated data only
    if s == 0:
        pp.send_tensor_dict({"h": torch.arange(tp.world_size * 4.0), "k": 1}, dst=1, all_gather_group=tp)
    elif s == 1:
        got = pp.recv_tensor_dict(src=0, all_gather_group=tp)
        _assert_dict(got, {"h": torch.arange(tp.world_size * 4.0), "k": 1}, "send-allgather default map")


def check_world_size_one(c):
    """A group of one (the DP group with dp=1; at world size 1 every group) behaves as vLLM's."""
    g = D.get_dp_group()
    assert g.world_size == 1
    t = torch.arange(6.0).reshape(2, 3)
    assert g.all_reduce(t) is t
    assert g.all_gather(t, dim=0) is t
    assert g.all_gather(t) is t
    assert g.reduce_scatter(t) is t
    assert g.gather(t) is t
    assert g.broadcast(t) is t
    obj = {"x": 1}
    assert g.broadcast_object(obj) is obj
    lst = [1, "two"]
    assert g.broadcast_object_list(lst) is lst
    d = {"t": t, "s": "x"}
    assert g.broadcast_tensor_dict(d) is d
    assert g.send_tensor_dict(d) is d
    assert g.recv_tensor_dict() is None
    res = g.irecv_tensor_dict()
    assert isinstance(res, tuple) and res[0] is None and res[1] == [] and res[2] == [], res
    assert g.isend_tensor_dict(d) == []
    g.barrier()
    assert_tensor(g.all_gatherv(t), t, "all_gatherv at world size 1")
    assert_tensor(g.reduce_scatterv(t, dim=0), t, "reduce_scatterv at world size 1")
    if c.world_size == 1:
        assert D.tensor_model_parallel_all_reduce(t) is t
        assert D.tensor_model_parallel_all_gather(t) is t
        assert D.tensor_model_parallel_reduce_scatter(t) is t
        assert D.tensor_model_parallel_gather(t) is t
        assert D.broadcast_tensor_dict(d) is d
        pp = D.get_pp_group()
        assert pp.send_tensor_dict(d) is d
        assert pp.recv_tensor_dict() is None
        assert pp.irecv_tensor_dict() == (None, [], [])


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool]


def _sample(dtype, salt=0):
    if dtype == torch.bool:
        return (torch.arange(7) + salt) % 3 == 0
    if dtype.is_floating_point:
        return torch.tensor([0.5, -1.25, 3.0, 0.0, 1024.0, -0.125], dtype=dtype) * (salt + 1)
    if dtype == torch.uint8:
        return (torch.arange(0, 250, 37) + salt).to(dtype)
    return (torch.arange(-3, 5) * (salt + 1)).to(dtype)


def check_dtypes(c):
    world, pp = D.get_world_group(), D.get_pp_group()
    n, r = world.world_size, world.rank_in_group
    want = {str(dt): _sample(dt, 1) for dt in DTYPES}
    out = world.broadcast_tensor_dict(want if r == 0 else None, src=0)
    if r != 0:
        _assert_dict(out, want, "dtypes broadcast_tensor_dict")
    if pp.world_size > 1:
        if pp.is_first_rank:
            pp.send_tensor_dict(want, dst=1)
        elif pp.rank_in_group == 1:
            _assert_dict(pp.recv_tensor_dict(src=0), want, "dtypes send_tensor_dict")
    # all_reduce / all_gather of every dtype but bool (reductions refuse bool)
    for dt in DTYPES:
        if dt == torch.bool:
            continue
        x = ((torch.arange(6) % 5) * (r + 1)).to(dt)
        got = world.all_reduce(x)
        if n == 1:
            assert got is x
        else:
            acc = torch.float32 if dt.is_floating_point else torch.int64
            oracle = sum(((torch.arange(6) % 5) * (i + 1)).to(dt).to(acc) for i in range(n)).to(dt)
            assert_tensor(got, oracle, f"all_reduce {dt}")
    for dt in DTYPES:
        x = _sample(dt, r)
        got = world.all_gather(x, dim=0)
        if n > 1:
            assert_tensor(got, torch.cat([_sample(dt, i) for i in range(n)]), f"all_gather {dt}")
        b = _sample(dt, 5) if r == n - 1 else torch.zeros_like(_sample(dt, 5))
        world.broadcast(b, src=n - 1)
        assert_tensor(b, _sample(dt, 5), f"broadcast {dt}")


def check_numpy(c):
    world = D.get_world_group()
    n, r = world.world_size, world.rank_in_group
    if n == 1:
        return
    a = np.arange(8, dtype=np.float32) * (r + 1)
    got = world.all_reduce(a)
    assert isinstance(got, torch.Tensor), f"numpy in, {type(got)} out"
    assert_tensor(got, sum(torch.arange(8, dtype=torch.float32) * (i + 1) for i in range(n)), "numpy all_reduce")
    got = world.all_gather(np.full((2, 2), r, dtype=np.int16), dim=1)
    assert_tensor(got, torch.cat([torch.full((2, 2), i, dtype=torch.int16) for i in range(n)], dim=1),
                  "numpy all_gather")
    # in-place broadcast into a numpy array
    b = np.arange(5, dtype=np.int64) if r == 0 else np.zeros(5, dtype=np.int64)
    assert world.broadcast(b, src=0) is b
    assert (b == np.arange(5)).all(), b
    # dicts of numpy arrays come back as torch tensors (bool as bool)
    want = {"f": np.linspace(0, 1, 5, dtype=np.float32), "i": np.arange(-2, 3, dtype=np.int16),
            "b": np.array([True, False, True]), "u": np.arange(4, dtype=np.uint8), "s": "str"}
    out = world.broadcast_tensor_dict(want if r == n - 1 else None, src=n - 1)
    if r != n - 1:
        _assert_dict(out, want, "numpy broadcast_tensor_dict")
    if r == 0:
        world.send_tensor_dict(want, dst=1)
    elif r == 1:
        _assert_dict(world.recv_tensor_dict(src=0), want, "numpy send_tensor_dict")
    if r == 1:
        world.send(np.arange(6, dtype=np.float64).reshape(2, 3), dst=0)
    elif r == 0:
        assert_tensor(world.recv((2, 3), torch.float64, src=1), torch.arange(6, dtype=torch.float64).reshape(2, 3))


def check_non_contiguous(c):
    world = D.get_world_group()
    n, r = world.world_size, world.rank_in_group
    base = [torch.arange(24, dtype=torch.float32).reshape(4, 6) * (i + 1) for i in range(n)]
    t = base[r].t()
    assert not t.is_contiguous()
    got = world.all_reduce(t)
    if n > 1:
        assert_tensor(got, sum(b.t() for b in base).contiguous(), "all_reduce non-contiguous")
    got = world.all_gather(base[r][:, ::2], dim=0)
    if n > 1:
        assert_tensor(got, torch.cat([b[:, ::2] for b in base], dim=0), "all_gather non-contiguous")
    # a strided slice and an offset view in a dict
    src = base[0]
    want = {"strided": src[:, ::2], "offset": src[1:], "transposed": src.t(), "expanded": torch.ones(1, 3).expand(4, 3)}
    out = world.broadcast_tensor_dict(want if r == 0 else None, src=0)
    if r != 0:
        _assert_dict(out, {k: v.contiguous() for k, v in want.items()}, "non-contiguous broadcast_tensor_dict")
    if n > 1:
        if r == 0:
            world.send_tensor_dict(want, dst=n - 1)
            world.send(src.t(), dst=n - 1)
        elif r == n - 1:
            _assert_dict(world.recv_tensor_dict(src=0), {k: v.contiguous() for k, v in want.items()},
                         "non-contiguous send_tensor_dict")
            assert_tensor(world.recv((6, 4), torch.float32, src=0), src.t().contiguous(), "send non-contiguous")


def check_overwrite_after_send(c):
    """A blocking send returns only when the caller's memory is no longer needed: overwriting the
    tensor right after the send returns never changes what the receiver gets (the receiver is
    slow on purpose). Without donate, the receiver never shares the sender's memory."""
    world = D.get_world_group()
    n, r = world.world_size, world.rank_in_group
    if n == 1:
        return
    big = torch.full((256 * 1024,), 7.0)  # 1 MiB
    small = torch.arange(16, dtype=torch.int64)
    if r == 0:
        world.send_tensor_dict({"big": big, "small": small, "ptr": big.data_ptr()}, dst=1)
        big.fill_(-1.0)
        small.fill_(-1)
        world.send(big2 := torch.full((1000,), 3, dtype=torch.int32), dst=1)
        big2.fill_(-1)
        hs = world.isend_tensor_dict({"x": (x := torch.full((4096,), 9.0))}, dst=1)
        for h in hs:
            h.wait()
        x.fill_(-1)
        world.barrier()
    elif r == 1:
        time.sleep(0.3)
        got = world.recv_tensor_dict(src=0)
        assert_tensor(got["big"], torch.full((256 * 1024,), 7.0), "overwritten after send_tensor_dict")
        assert_tensor(got["small"], torch.arange(16, dtype=torch.int64), "small overwritten after send")
        if c.embedded:
            assert got["big"].data_ptr() != got["ptr"], "without donate the receiver shares the sender's memory"
        time.sleep(0.1)
        assert_tensor(world.recv((1000,), torch.int32, src=0), torch.full((1000,), 3, dtype=torch.int32),
                      "overwritten after send")
        got = world.recv_tensor_dict(src=0)
        world.barrier()  # the sender has overwritten by now
        assert_tensor(got["x"], torch.full((4096,), 9.0), "overwritten after isend + wait")
    else:
        world.barrier()


def check_donate(c):
    """donate=True (the keyword-only extension): accepted everywhere; in one process the receiver's
    tensor is the sender's memory (torch and numpy in, torch out)."""
    world = D.get_world_group()
    n, r = world.world_size, world.rank_in_group
    if n == 1:
        d = {"x": torch.ones(2)}
        assert world.send_tensor_dict(d, donate=True) is d
        return
    if r == 0:
        t = torch.arange(1024, dtype=torch.float32)
        a = np.arange(512, dtype=np.int32)
        world.send_tensor_dict({"t": t, "a": a, "pt": t.data_ptr(), "pa": a.ctypes.data}, dst=1, donate=True)
        hs = world.isend_tensor_dict({"u": (u := torch.ones(64))}, dst=1, donate=True)
        for h in hs:
            h.wait()
        world.send_object(u.data_ptr(), 1)
        del t, a, u
    elif r == 1:
        got = world.recv_tensor_dict(src=0)
        assert_tensor(got["t"], torch.arange(1024, dtype=torch.float32), "donated torch")
        assert_tensor(got["a"], torch.arange(512, dtype=torch.int32), "donated numpy")
        got2 = world.recv_tensor_dict(src=0)
        assert_tensor(got2["u"], torch.ones(64), "donated isend")
        pu = world.recv_object(0)
        if c.embedded:
            assert got["t"].data_ptr() == got["pt"], "donate=True: the receiver's tensor is not the sender's memory"
            assert got["a"].data_ptr() == got["pa"], "donate=True: numpy in, torch out, not the same address"
            assert got2["u"].data_ptr() == pu, "isend donate=True: not the sender's memory"


def check_barrier_and_timeout_property(c):
    for name, getter in [("world", D.get_world_group)] + list(GETTERS.items()):
        g = getter()
        g.barrier()
        old = g.timeout
        assert isinstance(old, datetime.timedelta), f"{name}.timeout is {type(old)}"
        assert old.total_seconds() > 0
        g.timeout = datetime.timedelta(seconds=7.5)
        assert g.timeout == datetime.timedelta(seconds=7.5)
        g.timeout = old
        assert g.timeout == old


def check_all_to_all(c):
    world = D.get_world_group()
    n, r = world.world_size, world.rank_in_group
    # rank i sends (i + j + 1) rows to rank j, each row tagged [i, j]
    def rows(i, j):
        return torch.tensor([[i, j]] * (i + j + 1), dtype=torch.int64)
    inp = torch.cat([rows(r, j) for j in range(n)], dim=0)
    out = world.all_to_all(inp, [r + j + 1 for j in range(n)])
    assert_tensor(out, torch.cat([rows(i, r) for i in range(n)], dim=0), "all_to_all")


def check_graph_capture(c):
    tp = D.get_tp_group()
    with D.graph_capture(torch.device("cpu")) as ctx:
        assert hasattr(ctx, "stream")
        x = torch.ones(3)
        got = tp.all_reduce(x)
        if tp.world_size == 1:
            assert got is x
        else:
            assert_tensor(got, torch.full((3,), float(tp.world_size)), "all_reduce in graph_capture")


def check_exceptions(c):
    """Invalid arguments are refused locally with InvalidArgumentError (a ValueError), on every
    rank alike, and the world stays usable."""
    world = D.get_world_group()
    n = world.world_size

    def refused(fn, what, kinds=(rankmesh.InvalidArgumentError,)):
        try:
            fn()
        except kinds as e:
            assert isinstance(e, rankmesh.Error), f"{what}: {type(e)} is not a rankmesh.Error"
            return e
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{what}: raised {type(e).__name__}: {e}, want {kinds}") from e
        raise AssertionError(f"{what}: not refused")

    if n > 1:
        e = refused(lambda: world.all_gather(torch.ones(2, 3, 4), dim=3), "all_gather dim=3")
        assert isinstance(e, ValueError) and e.code == 0, (type(e).__mro__, e.code)
        refused(lambda: world.all_gather(torch.ones(2, 3, 4), dim=-4), "all_gather dim=-4")
        refused(lambda: world.reduce_scatter(torch.ones(2, 3, 4), dim=5), "reduce_scatter dim=5")
        refused(lambda: world.reduce_scatter(torch.ones(n * 2 + 1), dim=0), "reduce_scatter indivisible")
        refused(lambda: world.broadcast(torch.ones(2), src=n), "broadcast src=world_size")
        refused(lambda: world.broadcast_object(1, src=n), "broadcast_object src=world_size")
        refused(lambda: world.send_object(1, world.rank_in_group), "send_object to itself")
        refused(lambda: world.recv_object(world.rank_in_group), "recv_object from itself")
        refused(lambda: world.send_object(1, n), "send_object dst=world_size")
        refused(lambda: world.recv((4,), torch.float32, src=n), "recv src=world_size")
        refused(lambda: world.send(torch.ones(2), dst=n), "send dst=world_size")
        refused(lambda: world.send_tensor_dict({"a": 1}, dst=n), "send_tensor_dict dst=world_size")
        refused(lambda: world.all_gatherv(torch.ones(1, 2), sizes=[1] * (n + 1)), "all_gatherv len(sizes)")
        refused(lambda: world.reduce_scatterv(torch.ones(n + 5, 2), dim=0, sizes=[1] * n), "reduce_scatterv sum(sizes)")
        refused(lambda: world.all_reduce(torch.ones(3, dtype=torch.bool)), "all_reduce of bool")
        refused(lambda: world.send_tensor_dict([1, 2], dst=(world.rank_in_group + 1) % n),
                "send_tensor_dict of a list", (TypeError, rankmesh.InvalidArgumentError))
    refused(lambda: D.initialize_model_parallel(c.tp_size, c.pp_size), "initialize_model_parallel twice")
    refused(lambda: D.ensure_model_parallel_initialized(c.tp_size * 2, c.pp_size),
            "ensure_model_parallel_initialized other sizes", (rankmesh.MismatchError,))
    # still usable
    x = torch.ones(2)
    got = world.all_reduce(x)
    assert_tensor(got if n > 1 else got * n, torch.full((2,), float(n)), "all_reduce after refusals")


ALL = {name[len("check_"):]: fn for name, fn in list(globals().items()) if name.startswith("check_")}


def layouts(world_size):
    """(tp, pp) layouts a world of this size is checked under."""
    return {1: [(1, 1)], 2: [(2, 1), (1, 2)], 3: [(1, 3)], 4: [(2, 2), (4, 1), (1, 4)]}[world_size]
