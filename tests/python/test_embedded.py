"""Every check of _checks.py in an embedded world: one rankmesh.Runtime, one thread per rank
(rt.run), on 1, 2 and 4 ranks under vLLM's layouts (tp x pp), plus a few over the shm and tcp
transports between embedded ranks."""
import pytest

from conftest import NOT_BUILT

rankmesh = pytest.importorskip("rankmesh", reason=NOT_BUILT)
D = pytest.importorskip("rankmesh.distributed", reason=NOT_BUILT)
import _checks  # noqa: E402

LAYOUTS = {"w1": (1, 1, 1), "w2-tp2": (2, 2, 1), "w2-pp2": (2, 1, 2), "w4-tp2-pp2": (4, 2, 2),
           "w4-tp4": (4, 4, 1)}


def run_embedded(world, tp, pp, fn, transport="auto"):
    def rank_main():
        D.init_distributed_environment(backend="gloo")
        D.initialize_model_parallel(tp, pp)
        fn(_checks.Ctx(tp, pp, embedded=True))
        D.destroy_model_parallel()
        D.destroy_distributed_environment()
        return D.model_parallel_is_initialized()

    with rankmesh.Runtime(world, timeout=15.0, transport=transport) as rt:
        assert rt.run(rank_main) == [False] * world


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("check", list(_checks.ALL))
def test_check(check, layout):
    world, tp, pp = LAYOUTS[layout]
    run_embedded(world, tp, pp, _checks.ALL[check])


@pytest.mark.parametrize("transport", ["shm", "tcp", "inproc"])
@pytest.mark.parametrize("check", ["all_reduce", "send_allgather", "overwrite_after_send", "dtypes",
                                   "numpy", "broadcast_tensor_dict"])
def test_check_over_transport(check, transport):
    if transport != "inproc" and check == "donate":
        pytest.skip("donation is for one process")
    run_embedded(4, 2, 2, _checks.ALL[check], transport=transport)


def test_all_layouts_in_one_runtime():
    """initialize/destroy_model_parallel repeatedly in one world, every layout of 4 ranks."""
    def rank_main():
        D.init_distributed_environment(world_size=4, backend="gloo")
        r = D.get_world_group().rank
        D.init_distributed_environment(world_size=4, rank=r, local_rank=r, backend="nccl")
        for tp, pp in _checks.layouts(4):
            D.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
            ctx = _checks.Ctx(tp, pp, embedded=True)
            for name in ("groups", "all_reduce", "send_allgather", "send_recv_tensor_dict"):
                _checks.ALL[name](ctx)
            D.destroy_model_parallel()
            assert not D.model_parallel_is_initialized()
        D.ensure_model_parallel_initialized(2, 2)
        assert D.get_tp_group().world_size == 2 and D.get_pp_group().world_size == 2
        D.cleanup_dist_env_and_memory()
        return r

    with rankmesh.Runtime(4, timeout=15.0) as rt:
        assert rt.run(rank_main) == [0, 1, 2, 3]
