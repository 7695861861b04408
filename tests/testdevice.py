"""The device that the device-neutral tests put their inputs on.

``MINIFUSE_TEST_DEVICE=cuda python -m pytest tests/test_ops.py tests/test_hypothesis_ops.py``
runs the op harness on a GPU; results are compared on the host through ``np.asarray(tensor)``.
"""
import os

import minifuse as mf

DEVICE = os.environ.get("MINIFUSE_TEST_DEVICE", "cpu")
if mf.Device(DEVICE).type == "cuda" and not mf.cuda_available():
    raise RuntimeError(f"MINIFUSE_TEST_DEVICE={DEVICE} but CUDA is not usable here "
                       f"(pip install 'minifuse[cuda]' on a machine with an NVIDIA GPU)")
