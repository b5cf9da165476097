"""vLLM's communication_op: the TP group's collectives as module-level functions."""
from __future__ import annotations

from typing import Any, Optional

from rankmesh._runtime import bound_state
from rankmesh.distributed.parallel_state import get_tp_group


def tensor_model_parallel_all_reduce(input_: Any) -> Any:
    return get_tp_group().all_reduce(input_)


def tensor_model_parallel_all_gather(input_: Any, dim: int = -1) -> Any:
    return get_tp_group().all_gather(input_, dim)


def tensor_model_parallel_reduce_scatter(input_: Any, dim: int = -1) -> Any:
    return get_tp_group().reduce_scatter(input_, dim)


def tensor_model_parallel_gather(input_: Any, dst: int = 0, dim: int = -1) -> Optional[Any]:
    return get_tp_group().gather(input_, dst, dim)


def broadcast_tensor_dict(tensor_dict: Optional[dict[str, Any]] = None, src: int = 0) -> Optional[dict[str, Any]]:
    """Over the TP group; the dict itself where no world exists (as vLLM)."""
    if bound_state() is None:
        return tensor_dict
    return get_tp_group().broadcast_tensor_dict(tensor_dict, src)
