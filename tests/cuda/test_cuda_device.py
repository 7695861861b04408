"""The device model on a real GPU: tensors and modules moved between devices, gradients across
the move, mixing devices, the layers dispatching to the CUDA kernels, CUDA-graph replay; and,
on any machine, the error that says what to install."""
import numpy as np
import pytest

import minifuse as mf
import minifuse.nn as nn
from cudatest import GPU, needs_gpu
from minifuse.device import Device


def test_device_names_parse_and_compare():
    assert Device("cuda") == Device("cuda:0") == "cuda:0"
    assert str(Device("cuda:1")) == "cuda:1"
    with pytest.raises(ValueError, match="expected 'cpu', 'cuda' or 'cuda:N'"):
        Device("gpu")


@pytest.mark.skipif(GPU, reason="checks the message shown when CUDA is not usable")
def test_cuda_without_gpu_or_cupy_says_what_to_install():
    with pytest.raises(RuntimeError, match=r"pip install 'minifuse\[cuda\]'|no NVIDIA GPU is visible"):
        mf.tensor([1.0], device="cuda")
    assert not mf.cuda_available()


@needs_gpu
def test_to_cuda_and_back_with_gradients():
    import cupy
    x = mf.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x.cuda()
    assert y.device == "cuda:0" and isinstance(y.data, cupy.ndarray)
    out = (y * y).sum().cpu()
    assert out.device == "cpu"
    out.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.arange(6.0).reshape(2, 3))
    assert x.to("cuda").to("cpu").device == "cpu"
    assert mf.zeros(2, device="cuda").device == "cuda:0"


@needs_gpu
def test_mixing_devices_raises_clearly():
    a, b = mf.ones(3), mf.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match="all tensors must be on one device.*cpu.*cuda:0"):
        a + b


@needs_gpu
def test_module_to_cuda_runs_fused_kernels_and_matches_cpu(rng):
    mf.manual_seed(0)
    layer = nn.TransformerLayer(16, 2, 32).eval()
    x = mf.tensor(rng.standard_normal((2, 5, 16)).astype(np.float32))
    mask = mf.tensor(np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    with mf.no_grad():
        expected = np.asarray(layer(x, mask))
        layer.to("cuda")
        assert all(p.device == "cuda:0" for p in layer.parameters())
        got = layer(x.cuda(), mask.cuda())
    assert got.device == "cuda:0"
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-4, atol=2e-4)


@needs_gpu
def test_training_step_on_cuda_matches_cpu(rng):
    mf.manual_seed(1)
    model = nn.MLP(8, activation="gelu")
    x_np = rng.standard_normal((4, 8)).astype(np.float32)
    grads = {}
    for dev in ("cpu", "cuda"):
        model.to(dev)
        model.zero_grad()
        loss = (model(mf.tensor(x_np, device=dev)) ** 2).mean()
        loss.backward()
        grads[dev] = [np.asarray(p.grad) for p in model.parameters()]
    for g_cpu, g_gpu in zip(grads["cpu"], grads["cuda"]):
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_cuda_graph_replay_matches_eager(rng):
    import cupy
    from minifuse.bench.tiled_gemm import tiled_linear_act
    from minifuse.kernels import cuda as K
    x, r = (cupy.asarray(rng.standard_normal((64, 32)).astype(np.float32)) for _ in range(2))
    w = cupy.asarray(rng.standard_normal((32, 32)).astype(np.float32) * 0.2)
    b, g, beta = (cupy.asarray(rng.standard_normal(32).astype(np.float32)) for _ in range(3))

    def block(x, r):   # numba kernels only: a tiled GEMM + bias + GELU, then residual + LayerNorm
        return K.residual_layer_norm(tiled_linear_act(x, w, b, "gelu", config="64x64"), r, g, beta, 1e-5)

    eager = block(x, r).get()
    graph = K.CudaGraph(block, x, r)
    np.testing.assert_allclose(graph.replay().get(), eager, rtol=1e-6, atol=1e-6)
    x[...] = cupy.asarray(rng.standard_normal((64, 32)).astype(np.float32))   # new input, same buffer
    np.testing.assert_allclose(graph.replay().get(), block(x, r).get(), rtol=1e-6, atol=1e-6)


@needs_gpu
def test_cuda_graph_sees_arguments_still_being_written_on_the_callers_stream(rng):
    """An argument uploaded behind work in flight on the current stream is what the graph's warm-up
    run reads (its private stream waits for the caller's), not the memory before the upload."""
    import cupy
    from minifuse.kernels import cuda as K
    big = cupy.ones((4096, 4096), np.float32)
    for _ in range(20):                           # tens of milliseconds queued on the current stream
        big = cupy.tanh(big @ big)
    host = rng.standard_normal(1 << 16).astype(np.float32)
    x = cupy.empty(host.shape, np.float32)
    x.set(host, stream=cupy.cuda.get_current_stream())
    seen = []

    def fn(a):
        if not cupy.cuda.runtime.streamIsCapturing(cupy.cuda.get_current_stream().ptr):
            seen.append(a.get())                  # the warm-up run, before the capture
        return a * 2

    graph = K.CudaGraph(fn, x)
    np.testing.assert_array_equal(seen[0], host)
    np.testing.assert_array_equal(graph.replay().get(), 2 * host)


@needs_gpu
def test_cuda_graph_captures_cublaslt_gemms_and_says_why_not_cupy_matmul(rng):
    import cupy
    from minifuse.kernels import cuda as K
    x = cupy.asarray(rng.standard_normal((64, 32)).astype(np.float32))
    w = cupy.asarray(rng.standard_normal((48, 32)).astype(np.float32))
    b = cupy.asarray(rng.standard_normal(48).astype(np.float32))
    graph = K.CudaGraph(lambda a: K.linear_act(a, w, b, "gelu_tanh"), x)   # cuBLASLt: capturable
    want = K.linear_act(x, w, b, "gelu_tanh").get()
    x[...] = 2 * x
    np.testing.assert_allclose(graph.replay().get(), K.linear_act(x, w, b, "gelu_tanh").get(), rtol=1e-6)
    assert not np.allclose(graph.output.get(), want)
    q = cupy.ones((1, 2, 8, 4), cupy.float64)     # float64: CuPy's batched matmul, not cuBLASLt
    with pytest.raises(RuntimeError, match="CuPy cannot capture cuBLAS"):
        K.CudaGraph(lambda a: K.attention(a, a, a, None, 1.0), q)
    # the stream is usable again afterwards
    assert float(K.bias_act_(cupy.ones((2, 2), cupy.float32), None, "relu").sum()) == 4.0


@needs_gpu
def test_kernels_run_on_cupys_current_stream(rng):
    import cupy
    from minifuse.kernels import cuda as K
    y = cupy.asarray(rng.standard_normal((64, 128)).astype(np.float32))
    expected = np.maximum(y.get(), 0)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        K.bias_act_(y, None, "relu")
        host = y.get(stream=s)   # ordered after the kernel only if it ran on s
    s.synchronize()
    np.testing.assert_array_equal(host, expected)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.bool_, np.int32, np.int64, np.float16, np.float32])
@pytest.mark.parametrize("shape", [(0,), (1,), (7, 5), (3, 0, 2)])
def test_host_arrays_reach_the_device_without_waiting_for_it(dtype, shape):
    """Masks and packing offsets go to the GPU through a pinned buffer on the current stream:
    the call returns while earlier GPU work still runs, and the copy is the host array's values
    at the call (changed afterwards, the device copy keeps them)."""
    import cupy
    from minifuse.kernels.cuda import packing
    host = (np.arange(int(np.prod(shape))).reshape(shape) % 2).astype(dtype)
    like = cupy.zeros(1, cupy.float32)
    big = cupy.ones((8192, 8192), cupy.float32)
    big @ big                             # about 20 ms of GPU work queued first
    out = packing.to_device(host, host.dtype, like)
    waited = cupy.cuda.get_current_stream().done
    want = host.copy()
    host[...] = 0 if host.size else host
    assert out.dtype == host.dtype and out.shape == shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out.get(), want)
    assert not waited or host.size == 0
