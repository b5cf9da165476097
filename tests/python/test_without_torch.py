"""Without torch, received tensors come back as numpy arrays (bool as bool), through rankmesh's
own DLPack buffer object; a process where torch does not import is simulated by blocking it."""
import subprocess
import sys

SCRIPT = r'''
import sys
sys.modules["torch"] = None  # torch does not import
import numpy as np, rankmesh, rankmesh.distributed as D

def body():
    D.initialize_model_parallel(2)
    tp = D.get_tp_group()
    sent = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([True, False]),
            "e": np.zeros((0, 2)), "i": np.arange(4, dtype=np.int16)[::2]}
    if tp.rank_in_group == 0:
        tp.send_tensor_dict(sent)
        return True
    got = tp.recv_tensor_dict()
    assert set(got) == set(sent), got
    for key, want in sent.items():
        assert type(got[key]) is np.ndarray, (key, type(got[key]))
        assert got[key].dtype == want.dtype and got[key].shape == want.shape, (key, got[key])
        assert np.array_equal(got[key], want), (key, got[key])
    return True

with rankmesh.Runtime(2) as rt:
    assert rt.run(body) == [True, True]
print("numpy only: ok")
'''


def test_received_tensors_are_numpy_arrays_without_torch(child_env):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=child_env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "numpy only: ok" in proc.stdout
