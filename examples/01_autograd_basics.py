# %% [markdown]
# # Autograd basics: what the tape records and how backward walks it
#
# A script (`python examples/01_autograd_basics.py`) and a notebook (each `# %%` is a cell).
# You will see a leaf tensor, the nodes its ops leave on the tape, `backward()` filling `.grad`,
# gradients accumulating, broadcasting, `no_grad`, and an op of your own. docs/autograd.md works
# the same ideas through by hand.

# %%
import minifuse as mf

# %% [markdown]
# ## 1. A leaf tensor that asks for gradients
# `requires_grad=True` marks a tensor whose gradient we want: a leaf of the tape.

# %%
x = mf.tensor([1.0, -2.0, 3.0], requires_grad=True)
print("x =", x, "| is_leaf:", x.is_leaf)

# %% [markdown]
# ## 2. Every op on it records one node on the tape: the output's `grad_fn`
# The node keeps what its backward needs: `x * x` keeps both inputs (d/dx x·x = 2x), `sum` only
# the shape.

# %%
y = x * x          # MulBackward: saves both inputs
z = y.sum()        # SumBackward: saves the input shape
print("y =", y)
print("z =", z)


def show_tape(t, indent="  "):
    """Print the nodes behind ``t``, output first (leaves are shown as 'leaf')."""
    node = t.grad_fn
    print(indent + (repr(node) if node else "leaf " + str(t.shape)))
    for parent in (node.inputs or ()) if node else ():
        if parent is not None:
            show_tape(parent, indent + "  ")


show_tape(z)

# %% [markdown]
# ## 3. `backward()` walks the tape from z to the leaves, output first
# Each node turns the gradient of its output into gradients of its inputs (the chain rule); the
# leaves collect theirs in `.grad`. The tape is freed afterwards.

# %%
z.backward()
print("x.grad =", x.grad, " (= 2x)")
print("the tape is freed afterwards:", z.grad_fn.inputs is None)

# %% [markdown]
# ## 4. Gradients accumulate in `.grad`, so reset them between steps
# (An optimizer's `zero_grad()` does this.)

# %%
(x * 3).sum().backward()
print("x.grad after a second backward of sum(3x):", x.grad, " (= 2x + 3)")
x.grad = None

# %% [markdown]
# ## 5. Broadcasting: the engine sums the gradient back to each input's shape

# %%
w = mf.randn(3, 1, requires_grad=True)
(x * w).sum().backward()      # (3,) * (3, 1) broadcasts to (3, 3)
print("w.shape", w.shape, "-> w.grad.shape", w.grad.shape)

# %% [markdown]
# ## 6. Under `no_grad` nothing is recorded (inference)

# %%
with mf.no_grad():
    q = x * 2
print("q.requires_grad:", q.requires_grad, "| q.grad_fn:", q.grad_fn)

# %% [markdown]
# ## 7. Your own op: an `autograd.Function` with forward and backward side by side
# `forward` and `backward` work on raw NumPy arrays; `ctx.save_for_backward` keeps only what
# backward needs.


# %%
class Cube(mf.autograd.Function):
    """out = x^3; d/dx = 3x^2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * 3 * x ** 2


x.grad = None
Cube.apply(x).sum().backward()
print("Cube.apply(x) recorded", Cube.apply(x).grad_fn, "; x.grad =", x.grad, " (= 3x^2)")
