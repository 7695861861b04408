"""Median times of single fused CPU kernels (float32), one line, for comparing two trees:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m minifuse.bench.kernel_times LABEL

attention_packed (B=8, S=128, d=768, 12 heads, padding mask) with each method, residual +
LayerNorm over 8192 x 768, bias + GELU (exact and tanh) over 1024 x 3072. Run the trees
alternately, several times: the machine is shared and a single run moves by 10-20%.
"""
import sys

import numpy as np

from minifuse.bench.kernels_cpu import timed
from minifuse.kernels import cpu


def median_ms(fn):
    return timed(fn, 15)[0]


def main(label):
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((8, 128, 3 * 768)).astype(np.float32)
    mask = np.ones((8, 128), np.int64)
    mask[::2, 100:] = 0
    x, r = (rng.standard_normal((8192, 768)).astype(np.float32) for _ in range(2))
    gamma, beta = np.ones(768, np.float32), np.zeros(768, np.float32)
    y = rng.standard_normal((1024, 3072)).astype(np.float32)
    bias = rng.standard_normal(3072).astype(np.float32)
    times = dict(attention_loop=median_ms(lambda: cpu.attention_packed(qkv, mask, 12, 0.125)),
                 attention_bmm=median_ms(lambda: cpu.attention_packed(qkv, mask, 12, 0.125, method="bmm")),
                 layernorm=median_ms(lambda: cpu.residual_layer_norm(x, r, gamma, beta, 1e-12)),
                 bias_gelu=median_ms(lambda: cpu.bias_act_(y, bias, "gelu")),
                 bias_gelu_tanh=median_ms(lambda: cpu.bias_act_(y, bias, "gelu_tanh")))
    print(label, " ".join(f"{k}={v:.2f}" for k, v in times.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
