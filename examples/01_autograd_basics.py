"""Autograd basics: what the tape records and how backward walks it.

Run: python examples/01_autograd_basics.py
"""
import minifuse as mf

print("1. A leaf tensor that asks for gradients")
x = mf.tensor([1.0, -2.0, 3.0], requires_grad=True)
print("   x =", x, "| is_leaf:", x.is_leaf)

print("\n2. Every op on it records one node on the tape: the output's grad_fn")
y = x * x          # MulBackward: saves both inputs, d/dx (x*x) = 2x
z = y.sum()        # SumBackward: saves the input shape, d/dy sum = 1
print("   y =", y)
print("   z =", z)


def show_tape(t, indent="   "):
    """Print the nodes behind ``t``, output first (leaves are shown as 'leaf')."""
    node = t.grad_fn
    print(indent + (repr(node) if node else "leaf " + str(t.shape)))
    for parent in (node.inputs or ()) if node else ():
        if parent is not None:
            show_tape(parent, indent + "  ")


show_tape(z)

print("\n3. backward() walks the tape from z to the leaves, output first")
z.backward()
print("   x.grad =", x.grad, " (= 2x)")
print("   the tape is freed afterwards:", z.grad_fn.inputs is None)

print("\n4. Gradients accumulate in .grad, so reset them between steps")
(x * 3).sum().backward()
print("   x.grad after a second backward of sum(3x):", x.grad, " (= 2x + 3)")
x.grad = None

print("\n5. Broadcasting: the engine sums the gradient back to each input's shape")
w = mf.randn(3, 1, requires_grad=True)
(x * w).sum().backward()      # (3,) * (3, 1) broadcasts to (3, 3)
print("   w.shape", w.shape, "-> w.grad.shape", w.grad.shape)

print("\n6. Under no_grad nothing is recorded (inference)")
with mf.no_grad():
    q = x * 2
print("   q.requires_grad:", q.requires_grad, "| q.grad_fn:", q.grad_fn)

print("\n7. Your own op: an autograd.Function with forward and backward side by side")


class Cube(mf.autograd.Function):
    """out = x^3; d/dx = 3x^2. forward and backward work on raw NumPy arrays."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)     # keep only what backward needs
        return x ** 3

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * 3 * x ** 2


x.grad = None
Cube.apply(x).sum().backward()
print("   Cube.apply(x) recorded", Cube.apply(x).grad_fn, "; x.grad =", x.grad, " (= 3x^2)")
