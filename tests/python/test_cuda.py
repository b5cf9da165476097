"""CUDA tensors across the Python boundary (DLPack with its stream protocol), and what happens
without a GPU: device="cuda" says why it cannot be had, a producer reporting a CUDA tensor to a
runtime without CUDA is refused before it is asked for its memory, and the export protocol's
arguments are checked. The tests that need a GPU skip, saying why, where torch sees none."""
import ctypes
import gc

import pytest
import torch

from conftest import NOT_BUILT

rankmesh = pytest.importorskip("rankmesh", reason=NOT_BUILT)
D = pytest.importorskip("rankmesh.distributed", reason=NOT_BUILT)
from rankmesh import _rankmesh  # noqa: E402

KDL_CPU, KDL_CUDA = 1, 2
GPU = torch.cuda.is_available()
NO_GPU = "no CUDA device for torch here (torch.cuda.is_available() is False)"


# --- without a GPU

@pytest.mark.skipif(GPU, reason="a GPU is present: test_gpu_* cover device='cuda'")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_device_unavailable_says_why(device):
    with pytest.raises(rankmesh.Error) as raised:
        rankmesh.Runtime(2, device=device)
    error = raised.value
    assert not isinstance(error, rankmesh.InvalidArgumentError), error
    message = str(error)
    assert f"device='{device}'" in message, message
    if _rankmesh._have_cuda:
        # CudaBackend::unavailable_reason() follows: the driver's or the runtime's own words.
        assert "no CUDA device can be used: " in message, message
        assert message.split("no CUDA device can be used: ", 1)[1].strip(), message
    else:
        assert "no CUDA backend" in message, message


@pytest.mark.skipif(GPU, reason="a GPU is present: test_gpu_* cover device='cuda'")
@pytest.mark.parametrize("through", ["argument", "environment"])
def test_init_distributed_environment_cuda_unavailable_says_why(through, monkeypatch):
    if through == "environment":
        monkeypatch.setenv("RANKMESH_DEVICE", "cuda")  # vLLM's call passes no device
        call = D.init_distributed_environment
    else:
        def call():
            D.init_distributed_environment(device="cuda")
    with pytest.raises(rankmesh.Error, match="device='cuda'"):
        call()
    assert not D.model_parallel_is_initialized()  # no world was left half-made


def test_device_spellings():
    with pytest.raises(rankmesh.InvalidArgumentError, match="expected 'cpu', 'cuda' or 'cuda:N'"):
        rankmesh.Runtime(1, device="gpu")
    with pytest.raises(rankmesh.InvalidArgumentError, match="expected"):
        rankmesh.Runtime(1, device="cuda:x")
    for host in (None, "cpu"):
        with rankmesh.Runtime(2, device=host) as rt:
            assert rt.devices == []


def test_bound_thread_device_must_match_its_runtime():
    def body():
        D.init_distributed_environment()  # host only: agrees
        with pytest.raises(rankmesh.InvalidArgumentError, match="made without devices"):
            D.init_distributed_environment(device="cuda")
        return True

    with rankmesh.Runtime(2) as rt:
        assert rt.run(body) == [True, True]


class FakeCudaProducer:
    """Reports a CUDA tensor; must be refused before it is asked for its memory."""

    def __init__(self):
        self.asked = 0

    def __dlpack_device__(self):
        return (KDL_CUDA, 0)

    def __dlpack__(self, stream=None):
        self.asked += 1
        raise AssertionError("a runtime without CUDA asked a CUDA producer for its tensor")


def test_cuda_producer_refused_without_cuda():
    fake = FakeCudaProducer()

    def body():
        D.initialize_model_parallel(2)
        tp = D.get_tp_group()
        with pytest.raises(rankmesh.InvalidArgumentError) as raised:
            tp.all_reduce(fake)
        message = str(raised.value)
        assert "all_reduce input: a cuda:0 tensor" in message, message
        if _rankmesh._have_cuda:
            assert 'device="cuda"' in message, message
        else:
            assert "no CUDA backend" in message, message
        with pytest.raises(rankmesh.InvalidArgumentError, match="a tensor dict value: a cuda:0 tensor"):
            tp.send_tensor_dict({"x": fake, "y": torch.ones(2)})
        tp.barrier()  # both refused before anything was sent: the group is still usable
        return tp.all_reduce(torch.ones(3)).tolist()

    with rankmesh.Runtime(2) as rt:
        assert rt.run(body) == [[2.0] * 3, [2.0] * 3]
    assert fake.asked == 0


# A DLPack capsule built by hand: a producer whose memory its __dlpack_device__ misreports.
class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    pass


DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                            ("deleter", DELETER)]

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class MisreportingProducer:
    """Says its tensor is on the host (or says nothing) and hands over a CUDA capsule."""

    def __init__(self, report_device):
        self.report_device = report_device
        self.released = 0
        self.memory = (ctypes.c_float * 4)()
        self.shape = (ctypes.c_int64 * 1)(4)
        self.deleter = DELETER(self._release)  # kept alive as long as the capsule may call it
        self.managed = DLManagedTensor()
        t = self.managed.dl_tensor
        t.data = ctypes.cast(self.memory, ctypes.c_void_p)
        t.device = DLDevice(KDL_CUDA, 0)
        t.ndim = 1
        t.dtype = DLDataType(2, 32, 1)  # float32
        t.shape = self.shape
        self.managed.deleter = self.deleter

    def _release(self, _managed):
        self.released += 1

    def __getattr__(self, name):
        if name == "__dlpack_device__" and self.report_device:
            return lambda: (KDL_CPU, 0)
        raise AttributeError(name)

    def __dlpack__(self, stream=None):
        return _capsule_new(ctypes.addressof(self.managed), b"dltensor", None)


@pytest.mark.parametrize("report_device", [True, False], ids=["says-host", "says-nothing"])
def test_producer_misreporting_its_device_is_refused_and_released(report_device):
    producers = [MisreportingProducer(report_device) for _ in range(2)]

    def body():
        world = D.get_world_group()
        with pytest.raises(rankmesh.InvalidArgumentError) as raised:
            world.all_reduce(producers[world.rank])
        message = str(raised.value)
        assert "device type 2" in message and "not on cpu:0" in message, message
        return True

    with rankmesh.Runtime(2) as rt:
        assert rt.run(body) == [True, True]
    gc.collect()
    assert [p.released for p in producers] == [1, 1]  # each refused capsule's deleter ran, once


def test_export_protocol_arguments():
    buffer = _rankmesh._Buffer()
    assert buffer.__dlpack_device__() == (KDL_CPU, 0)
    with pytest.raises(BufferError, match="without copies"):
        buffer.__dlpack__(copy=True)
    with pytest.raises(BufferError, match="its own device"):
        buffer.__dlpack__(dl_device=(KDL_CUDA, 0))
    buffer.__dlpack__(max_version=(1, 0), dl_device=(KDL_CPU, 0), copy=False)  # accepted


# --- with a GPU (skipped without one, saying so)

def cuda_runtime(world_size):
    if not GPU:
        pytest.skip(NO_GPU)
    if not _rankmesh._have_cuda:
        pytest.skip("this build of rankmesh has no CUDA backend (no CUDA toolkit where it was built)")
    return rankmesh.Runtime(world_size, device="cuda")


def late_fill(value, shape=(1 << 16,)):
    """A CUDA tensor filled with `value` by work queued behind a slow kernel on a side stream of
    torch's: a reader that does not order itself behind that stream reads the old zeros."""
    stream = torch.cuda.Stream()
    out = torch.zeros(shape, device="cuda")
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # ~ tens of ms on an H200
        out.fill_(value)
    return out, stream


def test_gpu_collectives_order_behind_the_producer_and_come_back_on_the_device():
    rt = cuda_runtime(2)
    assert rt.devices == [f"cuda:{i}" for i in range(min(2, torch.cuda.device_count()))], rt.devices

    def body():
        D.initialize_model_parallel(2)
        tp = D.get_tp_group()
        rank = tp.rank_in_group
        x, stream = late_fill(float(rank + 1))
        with torch.cuda.stream(stream):
            reduced = tp.all_reduce(x)  # the producer's stream is torch's current one here
        assert reduced.is_cuda, reduced.device
        torch.cuda.synchronize()
        assert torch.equal(reduced, torch.full_like(x, 3.0)), reduced[:4]
        gathered = tp.all_gather(torch.full((2, 3), float(rank), device="cuda"), dim=0)
        assert gathered.is_cuda
        expected = torch.cat([torch.full((2, 3), 0.0), torch.full((2, 3), 1.0)]).cuda()
        assert torch.equal(gathered, expected), gathered
        return True

    with rt:
        assert rt.run(body) == [True, True]


def test_gpu_tensor_dicts_mixing_host_and_device():
    rt = cuda_runtime(2)

    def body():
        D.initialize_model_parallel(1, 2)
        pp = D.get_pp_group()
        if pp.is_first_rank:
            x, stream = late_fill(7.0, (4, 1024))
            with torch.cuda.stream(stream):
                pp.send_tensor_dict({"x": x, "host": torch.arange(5), "mask": torch.tensor(
                    [True, False], device="cuda"), "step": 3})
            return True
        got = pp.recv_tensor_dict()
        assert got["x"].is_cuda and got["mask"].is_cuda and not got["host"].is_cuda
        assert got["mask"].dtype == torch.bool and got["mask"].tolist() == [True, False]
        assert got["step"] == 3 and got["host"].tolist() == list(range(5))
        # Used at once on torch's current stream: from_dlpack made that stream wait for it.
        assert torch.equal(got["x"] * 1, torch.full((4, 1024), 7.0, device="cuda"))
        return True

    with rt:
        assert rt.run(body) == [True, True]
