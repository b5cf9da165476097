"""Runtimes and which rank a thread acts for.

A `Runtime` is this process's part of a world: every rank (embedded, one thread per rank) or the
one rank a launcher gave it. `rankmesh.distributed`'s module-level functions act for the rank
the calling thread is bound to (`with runtime.rank(r):`), or else for the process's rank set by
`init_distributed_environment` under a launcher.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import threading
import weakref
from typing import Any, Callable, Iterator, Optional, Union

from rankmesh import _rankmesh

Timeout = Union[None, float, int, datetime.timedelta]


def seconds(timeout: Timeout) -> Optional[float]:
    """A timeout given as a timedelta or a number of seconds, in seconds (None stays None)."""
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


class RankState:
    """One rank of a runtime as rankmesh.distributed sees it: its groups, cached until the next
    initialize or destroy of its model parallel state, and its default timeout."""

    def __init__(self, runtime: "Runtime", rank: int) -> None:
        self.runtime = runtime
        self.rank = rank
        self.core = _rankmesh._state(runtime._core, rank)
        self.default_timeout: Optional[float] = None  # seconds; None: the runtime's
        self._groups: dict[str, Any] = {}

    def group(self, kind: str) -> Any:
        """The rankmesh.distributed.GroupCoordinator of group `kind` ("tp", "pp", ...)."""
        coordinator = self._groups.get(kind)
        if coordinator is None:
            from rankmesh.distributed.parallel_state import GroupCoordinator

            core_group = self.core.group(kind)
            if self.default_timeout is not None:
                core_group.timeout = self.default_timeout
            coordinator = GroupCoordinator(core_group)
            self._groups[kind] = coordinator
        return coordinator

    def forget_groups(self) -> None:
        self._groups.clear()

    # Timeline traces (docs/trace.md): recording starts with a trace directory (Runtime's
    # trace_dir or RANKMESH_TRACE) and can be switched at run time.
    @property
    def tracing(self) -> bool:
        return self.core.tracing

    @tracing.setter
    def tracing(self, on: bool) -> None:
        self.core.tracing = on

    def flush_trace(self) -> str:
        """Writes this rank's trace file now; returns its path."""
        return self.core.flush_trace()

    def dump_trace(self) -> str:
        """Writes this rank's trace to the next rotating dump file; returns its path."""
        return self.core.dump_trace()


_bound = threading.local()  # .state: the RankState this thread acts for
_process_state: Optional[RankState] = None  # set by init_distributed_environment
_live_runtimes: "weakref.WeakSet[Runtime]" = weakref.WeakSet()


def bound_state() -> Optional[RankState]:
    """The rank this thread acts for: its binding, else the process's; None when there is none."""
    state = getattr(_bound, "state", None)
    return state if state is not None else _process_state


def current_state() -> RankState:
    state = bound_state()
    if state is None:
        raise _rankmesh.Error(
            "no rankmesh rank here: call rankmesh.distributed.init_distributed_environment() "
            "(under `rankmesh launch`), or bind this thread with `with runtime.rank(r):`"
        )
    return state


def thread_binding() -> Optional[RankState]:
    return getattr(_bound, "state", None)


def set_process_state(state: Optional[RankState]) -> None:
    global _process_state
    _process_state = state


class Runtime:
    """This process's part of a world.

    Embedded (no launcher variables): all `world_size` ranks live in this process, joined by
    `transport` ("auto"/"inproc": in-process; "shm" or "tcp" for tests and benchmarks). Under a
    launcher (`rankmesh launch`, mpirun, srun) the environment sets the world and this process
    hosts its one rank. Close it (or use it as a context manager); the module closes live
    runtimes at interpreter exit.

    `device`: None or "cpu" for host tensors only; "cuda" gives each local rank the CUDA device
    cuda:(local_rank % device_count) — the launcher's local rank, as vLLM picks cuda:local_rank,
    or an embedded rank's rank % ranks_per_node — and "cuda:N" device N. CUDA tensors then cross
    in stream order (docs/python.md, "CUDA tensors"). Where rankmesh was built without CUDA or no
    device can be used, rankmesh.Error says why.
    """

    def __init__(
        self,
        world_size: int = 1,
        *,
        data_parallel_size: int = 1,
        ranks_per_node: int = 0,
        timeout: Timeout = None,
        transport: str = "auto",
        spin_us: Optional[float] = None,
        trace_dir: Optional[str] = None,
        device: Optional[str] = None,
    ) -> None:
        self._core = _rankmesh.Runtime(
            world_size, data_parallel_size, ranks_per_node, seconds(timeout), transport, spin_us,
            trace_dir or "", device or "",
        )
        self._data_parallel_size = data_parallel_size
        self._states = {rank: RankState(self, rank) for rank in self._core.local_ranks}
        _live_runtimes.add(self)

    @property
    def world_size(self) -> int:
        return self._core.world_size

    @property
    def local_ranks(self) -> list[int]:
        return list(self._states)

    @property
    def node_count(self) -> int:
        return self._core.node_count

    @property
    def devices(self) -> list[str]:
        """The devices besides the host whose tensors the ranks take ("cuda:0", ...)."""
        return self._core.devices

    def state(self, rank: int) -> RankState:
        try:
            return self._states[rank]
        except KeyError:
            raise _rankmesh.InvalidArgumentError(
                f"rank {rank} is not hosted by this runtime (local ranks: {self.local_ranks})"
            ) from None

    @contextlib.contextmanager
    def rank(self, rank: int) -> Iterator[RankState]:
        """Binds the calling thread to `rank` for the scope: rankmesh.distributed acts for it."""
        state = self.state(rank)
        previous = getattr(_bound, "state", None)
        _bound.state = state
        try:
            yield state
        finally:
            _bound.state = previous

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """Runs `fn(*args)` on one thread per local rank, each bound to its rank; returns the
        results by rank. When `fn` raises on a rank the runtime is aborted, so that the other
        ranks stop waiting for it (they fail with PeerLostError), and the first exception
        raised is re-raised once every thread has finished."""
        ranks = self.local_ranks
        results: list[Any] = [None] * len(ranks)
        failures: list[BaseException] = []
        lock = threading.Lock()

        def body(index: int, rank: int) -> None:
            try:
                with self.rank(rank):
                    results[index] = fn(*args)
            except BaseException as error:  # noqa: BLE001  (re-raised in the caller)
                with lock:
                    failures.append(error)
                    first = len(failures) == 1
                if first:
                    self.abort(f"rank {rank} raised {type(error).__name__}: {error}")

        threads = [
            threading.Thread(target=body, args=(i, r), name=f"rankmesh-rank-{r}")
            for i, r in enumerate(ranks)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return results

    def abort(self, reason: str) -> None:
        """Fails every pending and later operation of every local rank with `reason`."""
        if not self._core.closed:
            self._core.abort(reason)

    def close(self) -> None:
        """Fails what is still in flight, then stops the runtime; idempotent."""
        global _process_state
        if _process_state is not None and _process_state.runtime is self:
            _process_state = None
        self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _close_live_runtimes() -> None:
    # Before the interpreter finalizes: no tensor deleter may run without an interpreter.
    for runtime in list(_live_runtimes):
        runtime.close()
