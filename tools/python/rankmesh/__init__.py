"""rankmesh: distributed parallel state for inference engines.

`rankmesh.distributed` is vLLM's `vllm.distributed` (parallel_state and communication_op) over
rankmesh's runtime; `rankmesh.Runtime` runs a whole world in one process, one thread per rank.
"""
from rankmesh._rankmesh import (  # noqa: F401  (re-exported)
    Error,
    InvalidArgumentError,
    MismatchError,
    PeerLostError,
    TimeoutError,
    __version__,
    call_site,
)
from rankmesh._runtime import Runtime  # noqa: F401

__all__ = [
    "Error",
    "InvalidArgumentError",
    "MismatchError",
    "PeerLostError",
    "Runtime",
    "TimeoutError",
    "__version__",
    "call_site",
]
