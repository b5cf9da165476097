"""One rank of a launched world: `rankmesh launch --nproc-per-node N -- python3 _worker.py SCENARIO`
(or, for `checks`, run alone: init_distributed_environment then makes a world of 1).

Scenarios
  checks          every check of _checks.py under every layout of this world size; prints
                  "OK <layout> <check>" per check, "FAIL <layout> <check>: ..." and exits 1 on the
                  first failure, "DONE" at the end.
  kill-exit       the last rank os._exit(0)s while the others wait (rank 0 in a recv from it, the
                  rest in an all_reduce of the world group); survivors print "SURVIVOR <type> code=<c>".
  kill-sigkill    the same, the last rank SIGKILLs itself (the launcher then SIGTERMs the others,
                  which ignore it for its grace period).
"""
import datetime
import os
import signal
import sys
import time
import traceback

T0 = time.monotonic()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import rankmesh  # noqa: E402
import rankmesh.distributed as D  # noqa: E402
import _checks  # noqa: E402


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def selected_checks():
    """Every check, less those named in RANKMESH_TEST_SKIP (comma-separated; a debugging aid that
    the tests never set)."""
    skip = {name for name in os.environ.get("RANKMESH_TEST_SKIP", "").split(",") if name}
    return {name: fn for name, fn in _checks.ALL.items() if name not in skip}


def run_checks():
    say(f"START {time.monotonic() - T0:.3f}s")
    D.init_distributed_environment(backend="gloo", timeout=datetime.timedelta(seconds=20))
    world = D.get_world_group()
    n = world.world_size
    if "WORLD_SIZE" in os.environ:
        assert n == int(os.environ["WORLD_SIZE"]), (n, os.environ["WORLD_SIZE"])
        assert world.rank == int(os.environ["RANK"])
    for tp, pp in _checks.layouts(n):
        D.initialize_model_parallel(tp, pp)
        ctx = _checks.Ctx(tp, pp, embedded=False)
        for name, fn in selected_checks().items():
            started = time.monotonic()
            try:
                fn(ctx)
            except BaseException as e:  # noqa: BLE001
                say(f"FAIL tp{tp}pp{pp} {name}: {type(e).__name__}: {e}")
                for line in traceback.format_exc().splitlines():
                    say("  | " + line)
                os._exit(1)
            say(f"OK tp{tp}pp{pp} {name} {time.monotonic() - started:.3f}s")
        D.destroy_model_parallel()
        assert not D.model_parallel_is_initialized()
    say(f"DESTROY {time.monotonic() - T0:.3f}s")
    D.destroy_distributed_environment()
    say(f"DONE {time.monotonic() - T0:.3f}s")


def run_kill(how):
    D.init_distributed_environment(backend="gloo", timeout=datetime.timedelta(seconds=20))
    world = D.get_world_group()
    n, r = world.world_size, world.rank
    victim = n - 1
    world.barrier()
    if r == victim:
        say("VICTIM dying")
        if how == "exit":
            os._exit(0)
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "sigkill":
        # the launcher SIGTERMs the survivors once the victim's death is seen; they have its
        # grace period to notice the peer loss themselves
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        if r == 0:
            world.recv((4,), torch.float32, src=victim)
        else:
            world.all_reduce(torch.ones(4))
        say("SURVIVOR no-error")
    except rankmesh.Error as e:
        say(f"SURVIVOR {type(e).__name__} code={e.code} builtin_timeout={isinstance(e, TimeoutError)} msg={e}")
    except BaseException as e:  # noqa: BLE001
        say(f"SURVIVOR other {type(e).__name__}: {e}")
    # a later operation fails at once as well
    try:
        world.barrier()
        say("LATER no-error")
    except rankmesh.Error as e:
        say(f"LATER {type(e).__name__}")
    os._exit(0)


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "checks":
        run_checks()
    elif scenario == "kill-exit":
        run_kill("exit")
    elif scenario == "kill-sigkill":
        run_kill("sigkill")
    else:
        raise SystemExit(f"unknown scenario {scenario}")
