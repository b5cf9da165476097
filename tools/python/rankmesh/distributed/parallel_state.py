"""vLLM's parallel_state over rankmesh: the same names, argument names, order and defaults.

Differences from vLLM (docs/python.md lists them): any `backend` is accepted (rankmesh is the
backend); `irecv_tensor_dict` returns at once (a dict travels as one frame); send_tensor_dict
and isend_tensor_dict take a keyword-only `donate`; all_to_all, abort and the `timeout` property
are extensions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import gc
import os
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from rankmesh import _rankmesh
from rankmesh._runtime import (
    RankState,
    Runtime,
    Timeout,
    bound_state,
    current_state,
    seconds,
    set_process_state,
    thread_binding,
)

try:
    import torch
except ImportError:  # numpy arrays come back instead of torch tensors
    torch = None  # type: ignore[assignment]

TensorDict = dict[str, Any]
_ONE_TENSOR = "tensor"  # the key under which send()/recv() carry their tensor


def _assign(target: TensorDict, key: str, value: Any) -> None:
    target[key] = value


class _Postprocess(Sequence[Callable[[], None]]):
    """irecv_tensor_dict's postprocess list: one callable per received key, each bound to its
    own key (no late binding), that puts the key's value into the caller's dict. The keys are
    known once the receive has finished, so reading the list waits for it."""

    def __init__(self, handle: Any, target: TensorDict) -> None:
        self._handle = handle
        self._target = target
        self._steps: Optional[list[Callable[[], None]]] = None

    def _resolve(self) -> list[Callable[[], None]]:
        if self._steps is None:
            received = self._handle.wait()
            self._steps = [functools.partial(_assign, self._target, k, v) for k, v in received.items()]
        return self._steps

    def __len__(self) -> int:
        return len(self._resolve())

    def __getitem__(self, index):  # type: ignore[override]
        return self._resolve()[index]

    def __iter__(self) -> Iterator[Callable[[], None]]:
        return iter(self._resolve())


class GroupCoordinator:
    """One rank's view of one group, with vLLM's attributes and operations. Ranks passed to
    operations (src, dst) are ranks in the group; `ranks`, `next_rank`, `prev_rank` are global."""

    def __init__(self, core: Any) -> None:
        self._core = core
        self.ranks: list[int] = core.ranks
        self.rank: int = core.rank
        self.world_size: int = core.world_size
        self.rank_in_group: int = core.rank_in_group
        self.local_rank: int = core.local_rank
        self.unique_name: str = core.unique_name

    # --- vLLM's properties
    @property
    def first_rank(self) -> int:
        return self.ranks[0]

    @property
    def last_rank(self) -> int:
        return self.ranks[-1]

    @property
    def is_first_rank(self) -> bool:
        return self.rank == self.first_rank

    @property
    def is_last_rank(self) -> bool:
        return self.rank == self.last_rank

    @property
    def next_rank(self) -> int:
        return self.ranks[(self.rank_in_group + 1) % self.world_size]

    @property
    def prev_rank(self) -> int:
        return self.ranks[(self.rank_in_group - 1) % self.world_size]

    # --- extension: the group's timeout for blocking calls
    @property
    def timeout(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self._core.timeout)

    @timeout.setter
    def timeout(self, value: Timeout) -> None:
        self._core.timeout = seconds(value)

    def __repr__(self) -> str:
        return f"GroupCoordinator({self.unique_name}, ranks={self.ranks}, rank_in_group={self.rank_in_group})"

    # --- collectives (world size 1: the input itself, as vLLM)
    def all_reduce(self, input_: Any) -> Any:
        if self.world_size == 1:
            return input_
        return self._core.all_reduce(input_)

    def all_gather(self, input_: Any, dim: int = -1) -> Any:
        if self.world_size == 1:
            return input_
        return self._core.all_gather(input_, dim)

    def all_gatherv(self, input_: Union[Any, list[Any]], dim: int = 0, sizes: Optional[list[int]] = None) -> Any:
        if self.world_size == 1:
            return input_
        if isinstance(input_, (list, tuple)):
            return [self._all_gatherv_one(t, dim, sizes) for t in input_]
        return self._all_gatherv_one(input_, dim, sizes)

    def _all_gatherv_one(self, input_: Any, dim: int, sizes: Optional[list[int]]) -> Any:
        if sizes is not None:
            self._check_sizes(sizes)
            if input_.shape[dim] != sizes[self.rank_in_group]:
                raise _rankmesh.InvalidArgumentError(
                    f"all_gatherv on {self.unique_name}: rank {self.rank_in_group}'s input has "
                    f"{input_.shape[dim]} rows along dim {dim}, but sizes says {sizes[self.rank_in_group]}"
                )
        output = self._core.all_gatherv(input_, dim)
        if sizes is not None and output.shape[dim] != sum(sizes):
            raise _rankmesh.MismatchError(
                f"all_gatherv on {self.unique_name}: gathered {output.shape[dim]} rows along dim {dim}, "
                f"sizes {list(sizes)} add up to {sum(sizes)}"
            )
        return output

    def _check_sizes(self, sizes: Sequence[int]) -> None:
        if len(sizes) != self.world_size:
            raise _rankmesh.InvalidArgumentError(
                f"{self.unique_name}: sizes has {len(sizes)} entries for a group of {self.world_size}"
            )

    def reduce_scatter(self, input_: Any, dim: int = -1) -> Any:
        if self.world_size == 1:
            return input_
        return self._core.reduce_scatter(input_, dim)

    def reduce_scatterv(self, input_: Any, dim: int = -1, sizes: Optional[list[int]] = None) -> Any:
        if self.world_size == 1:
            return input_
        if sizes is None:
            return self._core.reduce_scatter(input_, dim)
        self._check_sizes(sizes)
        return self._core.reduce_scatterv(input_, list(sizes), dim)

    def gather(self, input_: Any, dst: int = 0, dim: int = -1) -> Optional[Any]:
        if self.world_size == 1:
            return input_
        return self._core.gather(input_, dst, dim)

    def broadcast(self, input_: Any, src: int = 0) -> Any:
        """In place: every other member's `input_` is filled with `src`'s; returns `input_`."""
        if self.world_size == 1:
            return input_
        if _is_contiguous(input_):
            self._core.broadcast(input_, src)
            return input_
        staged = _contiguous_copy(input_)  # wrapped memory must be contiguous; copy back after
        self._core.broadcast(staged, src)
        if self.rank_in_group != src:
            _copy_into(input_, staged)
        return input_

    def barrier(self) -> None:
        if self.world_size > 1:
            self._core.barrier()

    def all_to_all(self, input_: Any, send_counts: Sequence[int]) -> Any:
        """Extension: rows of `input_` along dim 0, send_counts[i] of them to group rank i;
        returns the rows received, in rank order."""
        if self.world_size == 1:
            return input_
        return self._core.all_to_all(input_, list(send_counts))

    # --- objects (anything picklable; plain values travel without pickle)
    def broadcast_object(self, obj: Optional[Any] = None, src: int = 0) -> Any:
        if self.world_size == 1:
            return obj
        received = self._core.broadcast_object(obj if self.rank_in_group == src else None, src)
        return obj if self.rank_in_group == src else received  # the source keeps its own (vLLM)

    def broadcast_object_list(self, obj_list: list[Any], src: int = 0, group: Any = None) -> list[Any]:
        """Fills `obj_list` in place on every member with `src`'s (same length); returns it."""
        if self.world_size == 1:
            return obj_list
        received = self._core.broadcast_object(list(obj_list) if self.rank_in_group == src else None, src)
        if self.rank_in_group != src:
            if len(received) != len(obj_list):
                raise _rankmesh.MismatchError(
                    f"broadcast_object_list on {self.unique_name}: rank {src} sent {len(received)} "
                    f"objects, rank {self.rank_in_group}'s list has room for {len(obj_list)}"
                )
            obj_list[:] = received
        return obj_list

    def send_object(self, obj: Any, dst: int) -> None:
        self._core.send_object(obj, dst)

    def recv_object(self, src: int) -> Any:
        return self._core.recv_object(src)

    # --- tensor dicts
    def broadcast_tensor_dict(
        self,
        tensor_dict: Optional[TensorDict] = None,
        src: int = 0,
        group: Any = None,
        metadata_group: Any = None,
    ) -> Optional[TensorDict]:
        """`group` and `metadata_group` (torch process groups in vLLM) are accepted and unused."""
        if self.world_size == 1:
            return tensor_dict
        received = self._core.broadcast_tensor_dict(tensor_dict if self.rank_in_group == src else None, src)
        return tensor_dict if self.rank_in_group == src else received

    def send_tensor_dict(
        self,
        tensor_dict: TensorDict,
        dst: Optional[int] = None,
        all_gather_group: Optional["GroupCoordinator"] = None,
        all_gather_tensors: Optional[dict[str, bool]] = None,
        *,
        donate: bool = False,
    ) -> Optional[TensorDict]:
        """Returns once the caller may overwrite the tensors. `donate=True` (extension) lets a
        receiver in this process share their memory instead of getting a copy."""
        if self.world_size == 1:
            return tensor_dict
        gather = None if all_gather_group is None else all_gather_group._core
        self._core.send_tensor_dict(tensor_dict, dst, gather, all_gather_tensors, donate)
        return None

    def recv_tensor_dict(
        self,
        src: Optional[int] = None,
        all_gather_group: Optional["GroupCoordinator"] = None,
        all_gather_tensors: Optional[dict[str, bool]] = None,
    ) -> Optional[TensorDict]:
        if self.world_size == 1:
            return None
        gather = None if all_gather_group is None else all_gather_group._core
        return self._core.recv_tensor_dict(src, gather, all_gather_tensors, None)

    def isend_tensor_dict(
        self,
        tensor_dict: TensorDict,
        dst: Optional[int] = None,
        all_gather_group: Optional["GroupCoordinator"] = None,
        all_gather_tensors: Optional[dict[str, bool]] = None,
        *,
        donate: bool = False,
    ) -> list[Any]:
        """Returns handles with wait(); the tensors must not change until they have returned."""
        if self.world_size == 1:
            return []
        return [
            self._core.isend_tensor_dict(tensor_dict, dst, _core_of(all_gather_group), all_gather_tensors, donate)
        ]

    def irecv_tensor_dict(
        self,
        src: Optional[int] = None,
        all_gather_group: Optional["GroupCoordinator"] = None,
        all_gather_tensors: Optional[dict[str, bool]] = None,
    ) -> tuple[Optional[TensorDict], list[Any], Sequence[Callable[[], None]]]:
        """Returns (tensor_dict, handles, postprocess) at once. `tensor_dict` is filled once the
        handles' wait() has returned and each postprocess (one per key) has been called."""
        if self.world_size == 1:
            return None, [], []
        handle = self._core.irecv_tensor_dict(src, _core_of(all_gather_group), all_gather_tensors)
        tensor_dict: TensorDict = {}
        return tensor_dict, [handle], _Postprocess(handle, tensor_dict)

    # --- one tensor
    def send(self, tensor: Any, dst: Optional[int] = None) -> None:
        if dst is None:
            dst = (self.rank_in_group + 1) % self.world_size
        self._core.send_tensor_dict({_ONE_TENSOR: tensor}, dst, None, None, False)

    def recv(self, size: Any, dtype: Any, src: Optional[int] = None) -> Any:
        """Receives a tensor of `size` and `dtype` into fresh memory of the caller's kind."""
        if src is None:
            src = (self.rank_in_group - 1) % self.world_size
        tensor = _empty(size, dtype)
        self._core.recv_tensor_dict(src, None, None, {_ONE_TENSOR: tensor})
        return tensor

    # --- extensions
    def abort(self, reason: str) -> None:
        """Fails every pending and later operation of this rank with `reason`."""
        self._core.abort(reason)

    def destroy(self) -> None:
        """vLLM's destroy(): the groups go with destroy_model_parallel()."""


def _core_of(group: Optional[GroupCoordinator]) -> Any:
    return None if group is None else group._core


def _is_contiguous(tensor: Any) -> bool:
    if torch is not None and isinstance(tensor, torch.Tensor):
        return tensor.is_contiguous()
    flags = getattr(tensor, "flags", None)
    return True if flags is None else bool(flags["C_CONTIGUOUS"])


def _contiguous_copy(tensor: Any) -> Any:
    if torch is not None and isinstance(tensor, torch.Tensor):
        return tensor.contiguous()
    import numpy

    return numpy.ascontiguousarray(tensor)


def _copy_into(target: Any, source: Any) -> None:
    if torch is not None and isinstance(target, torch.Tensor):
        target.copy_(source)
    else:
        target[...] = source


def _empty(size: Any, dtype: Any) -> Any:
    if torch is not None:
        return torch.empty(size, dtype=dtype)
    import numpy

    return numpy.empty(size, dtype=dtype)


# --- the module-level state, for the rank the calling thread acts for


def init_distributed_environment(
    world_size: int = -1,
    rank: int = -1,
    distributed_init_method: str = "env://",
    local_rank: int = -1,
    backend: str = "nccl",
    timeout: Optional[datetime.timedelta] = None,
    *,
    data_parallel_size: Optional[int] = None,
    device: Optional[str] = None,
) -> None:
    """Joins the world. Under a launcher (`rankmesh launch`, mpirun, srun) the environment says
    where; `distributed_init_method`, `local_rank` and `backend` are accepted and unused
    (rankmesh is the backend). In a thread bound to an embedded rank it checks that
    `world_size` and `rank` agree and sets the timeout. Without a launcher: a world of one.
    The data-parallel size comes from `data_parallel_size` or RANKMESH_DATA_PARALLEL_SIZE.
    `device` ("cuda", "cuda:N"; default: RANKMESH_DEVICE, else host only) is Runtime's: the
    device whose tensors this process's rank takes, so that vLLM code, which does not pass it,
    gets CUDA tensors with RANKMESH_DEVICE=cuda; a bound thread's runtime must have been made with
    the `device` passed here."""
    state = bound_state()
    if state is not None:
        _check_agrees(state, world_size, rank, data_parallel_size)
        _check_device(state, device)
        if timeout is not None:
            state.default_timeout = seconds(timeout)
        return
    if data_parallel_size is None:
        data_parallel_size = int(os.environ.get("RANKMESH_DATA_PARALLEL_SIZE", "1"))
    if device is None:
        device = os.environ.get("RANKMESH_DEVICE") or None
    runtime = Runtime(1, data_parallel_size=data_parallel_size, timeout=timeout, device=device)
    state = runtime.state(runtime.local_ranks[0])
    try:
        _check_agrees(state, world_size, rank, None)
    except BaseException:
        runtime.close()
        raise
    set_process_state(state)


def _check_agrees(state: RankState, world_size: int, rank: int, data_parallel_size: Optional[int]) -> None:
    if world_size not in (-1, state.runtime.world_size):
        raise _rankmesh.InvalidArgumentError(
            f"init_distributed_environment(world_size={world_size}): this world has "
            f"{state.runtime.world_size} ranks (a launcher sets the world: run under `rankmesh "
            f"launch`, or use rankmesh.Runtime(world_size=N) for one process)"
        )
    if rank not in (-1, state.rank):
        raise _rankmesh.InvalidArgumentError(
            f"init_distributed_environment(rank={rank}): this process or thread is rank {state.rank}"
        )
    if data_parallel_size is not None and data_parallel_size != state.runtime._data_parallel_size:
        raise _rankmesh.InvalidArgumentError(
            f"init_distributed_environment(data_parallel_size={data_parallel_size}): the runtime "
            f"was made with {state.runtime._data_parallel_size}"
        )


def _check_device(state: RankState, device: Optional[str]) -> None:
    if device in (None, "cpu") or state.runtime.devices:
        return
    raise _rankmesh.InvalidArgumentError(
        f"init_distributed_environment(device={device!r}): this thread's runtime was made without "
        f"devices: pass device={device!r} to rankmesh.Runtime"
    )


def destroy_distributed_environment() -> None:
    """Leaves the world this process joined with init_distributed_environment (a thread bound
    to an embedded rank leaves nothing: its Runtime's owner closes it)."""
    if thread_binding() is not None:
        return
    state = bound_state()
    if state is not None:
        state.runtime.close()


def cleanup_dist_env_and_memory(shutdown_ray: bool = False) -> None:
    destroy_model_parallel()
    destroy_distributed_environment()
    gc.collect()


def initialize_model_parallel(
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    prefill_context_model_parallel_size: int = 1,
    decode_context_model_parallel_size: int = 1,
    backend: Optional[str] = None,
) -> None:
    state = current_state()
    state.forget_groups()
    state.core.initialize_model_parallel(
        tensor_model_parallel_size,
        pipeline_model_parallel_size,
        prefill_context_model_parallel_size,
        decode_context_model_parallel_size,
        False,
    )


def ensure_model_parallel_initialized(
    tensor_model_parallel_size: int,
    pipeline_model_parallel_size: int,
    prefill_context_model_parallel_size: int = 1,
    decode_context_model_parallel_size: int = 1,
    backend: Optional[str] = None,
) -> None:
    state = current_state()
    state.core.initialize_model_parallel(
        tensor_model_parallel_size,
        pipeline_model_parallel_size,
        prefill_context_model_parallel_size,
        decode_context_model_parallel_size,
        True,
    )


def model_parallel_is_initialized() -> bool:
    state = bound_state()
    return state is not None and not state.runtime.closed and state.core.model_parallel_is_initialized()


def destroy_model_parallel() -> None:
    state = bound_state()
    if state is None or state.runtime.closed:
        return
    state.forget_groups()
    state.core.destroy_model_parallel()


def get_world_group() -> GroupCoordinator:
    return current_state().group("world")


def get_tp_group() -> GroupCoordinator:
    return current_state().group("tp")


def get_pp_group() -> GroupCoordinator:
    return current_state().group("pp")


def get_dp_group() -> GroupCoordinator:
    return current_state().group("dp")


def get_ep_group() -> GroupCoordinator:
    return current_state().group("ep")


def get_dcp_group() -> GroupCoordinator:
    return current_state().group("dcp")


def get_pcp_group() -> GroupCoordinator:
    return current_state().group("pcp")


def get_tensor_model_parallel_world_size() -> int:
    return get_tp_group().world_size


def get_tensor_model_parallel_rank() -> int:
    return get_tp_group().rank_in_group


def get_decode_context_model_parallel_world_size() -> int:
    return get_dcp_group().world_size


def get_decode_context_model_parallel_rank() -> int:
    return get_dcp_group().rank_in_group


def get_node_count() -> int:
    return current_state().runtime.node_count


def is_global_first_rank() -> bool:
    """True on world rank 0, and wherever no world exists yet (as vLLM)."""
    state = bound_state()
    return True if state is None or state.runtime.closed else state.core.is_global_first_rank()


def is_local_first_rank() -> bool:
    state = bound_state()
    return True if state is None or state.runtime.closed else state.core.is_local_first_rank()


@dataclasses.dataclass
class GraphCaptureContext:
    stream: Any


class _CaptureStream:
    """The side stream of a graph capture (a host stream: rankmesh's CUDA backend is to come)."""

    def __init__(self, scope: Any) -> None:
        self._scope = scope

    def synchronize(self, timeout: Timeout = 30.0) -> None:
        self._scope.synchronize(seconds(timeout))


@contextlib.contextmanager
def graph_capture(device: Any) -> Iterator[GraphCaptureContext]:
    """TP's and PP's graph captures on one side stream that first waits on the current one."""
    state = current_state()
    scope = _rankmesh.GraphCapture(state.runtime._core, state.rank)
    scope.enter()
    try:
        yield GraphCaptureContext(stream=_CaptureStream(scope))
    finally:
        scope.exit()
