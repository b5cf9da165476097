"""torch_probe: which torch the GPU host has, and whether its CUDA tensors cross DLPack with a stream.

Prints OK/FAIL/SKIP lines like the C probes (scripts/gpu_probe.sh runs it under a timeout)."""
import sys


def line(status, name, detail):
    print(f"{status:<4} {name}: {detail}", flush=True)


line("OK", "python", f"{sys.executable} {sys.version.split()[0]}")
try:
    import torch
except Exception as e:  # noqa: BLE001
    line("SKIP", "torch", f"import failed: {e!r}")
    sys.exit(0)

line("OK", "torch", f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
     f"cuda.is_available() {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    sys.exit(0)
line("OK", "torch_device", f"{torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)}, "
     f"{torch.cuda.device_count()} device(s)")

rc = 0
try:
    t = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
    s = torch.cuda.Stream()
    dev = t.__dlpack_device__()
    # The consumer names its stream; torch (the producer) makes that stream wait for t's stream.
    cap = t.__dlpack__(stream=s.cuda_stream)
    u = torch.from_dlpack(cap)
    same = u.data_ptr() == t.data_ptr()
    with torch.cuda.stream(s):
        ok = bool((u[-3:] == t[-3:]).all().item())
    try:
        t.__dlpack__(max_version=(1, 0), stream=s.cuda_stream)
        versioned = "max_version=(1,0) accepted"
    except TypeError as e:
        versioned = f"max_version not accepted ({e})"
    v = torch.from_dlpack(t)  # the object form (calls __dlpack__ with the current stream)
    line("OK" if same and ok and v.data_ptr() == t.data_ptr() else "FAIL", "torch_dlpack_cuda",
         f"__dlpack_device__ {tuple(dev)}, __dlpack__(stream=...) round trip zero-copy {same}, values ok {ok}; {versioned}")
except Exception as e:  # noqa: BLE001
    rc = 1
    line("FAIL", "torch_dlpack_cuda", repr(e))

try:
    # torch's own CUDA IPC (what torch.multiprocessing uses): export only, in-process.
    h = t.untyped_storage()._share_cuda_()
    line("OK", "torch_share_cuda", f"untyped_storage()._share_cuda_() gave a {len(h[1])}-byte handle")
except Exception as e:  # noqa: BLE001
    line("FAIL", "torch_share_cuda", repr(e))

try:
    import importlib.metadata as md
    names = sorted(d.metadata["Name"] + " " + d.version for d in md.distributions()
                   if d.metadata["Name"] and d.metadata["Name"].lower().startswith(
                       ("nvidia-", "torch", "cupy", "numpy", "triton", "cuda-")))
    line("OK", "python_gpu_packages", ", ".join(names))
except Exception as e:  # noqa: BLE001
    line("SKIP", "python_gpu_packages", repr(e))
sys.exit(rc)
