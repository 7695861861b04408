# %% [markdown]
# # gradcheck: proving a backward right with finite differences
#
# A script (`python examples/02_gradcheck.py`) and a notebook (each `# %%` is a cell).
# For each input element j, gradcheck nudges it by ±eps and measures how every output moves:
#
#     numerical J[:, j] = (f(x + eps e_j) - f(x - eps e_j)) / (2 eps)
#
# and compares that with the analytic Jacobian that backward produces, one row per output element.

# %%
import numpy as np

import minifuse as mf
import minifuse.nn.functional as F
from minifuse.autograd import Function, GradcheckError, gradcheck

mf.manual_seed(0)
x = mf.randn(3, 4, dtype=mf.float64, requires_grad=True)   # float64: differences need precision
w = mf.randn(5, 4, dtype=mf.float64, requires_grad=True)
b = mf.randn(5, dtype=mf.float64, requires_grad=True)

# %% [markdown]
# ## 1. A composite of ops: gelu(linear(x)) then layer_norm
# Every op's backward is chained by the engine; gradcheck checks the whole chain at once.

# %%
ok = gradcheck(lambda x, w, b: F.layer_norm(F.gelu(F.linear(x, w, b)), 5), (x, w, b))
print("gradcheck passed:", ok)

# %% [markdown]
# ## 2. A backward that is off by 1% is caught, with the worst element named
# The kind of bug a hand-written fused kernel can hide: the forward is right, the slope is not.


# %%
class SloppyTanh(Function):
    """tanh whose backward is wrong by 1%."""

    @staticmethod
    def forward(ctx, x):
        out = np.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (1 - out ** 2) * 1.01


try:
    gradcheck(SloppyTanh.apply, x)
except GradcheckError as e:
    print(e)

# %% [markdown]
# ## 3. `fast_mode` projects both Jacobians on random vectors: one backward per input
# O(1) evaluations instead of one per input element: for large inputs.

# %%
print("fast gradcheck of softmax:", gradcheck(lambda t: F.softmax(t, dim=-1), x, fast_mode=True))
