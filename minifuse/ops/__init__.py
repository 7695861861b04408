"""The primitive ops: every differentiable computation in minifuse is one of these classes.

  elementwise  Add Sub Mul Div Pow Neg Exp Log Sqrt Tanh Sigmoid Relu Abs Maximum Minimum Clamp
               Gelu Silu Where Compare Cast ToDevice
  reduce       Sum Mean Var Amax Amin
  linalg       MatMul
  shape        Reshape Permute Expand Index IndexSelect Cat
  nn           Softmax LogSoftmax LayerNorm BinaryCrossEntropyWithLogits
  conv         Unfold (im2col)

Everything else (linear, glu, cross_entropy, attention, ...) is composed from them and gets
its backward for free. Fused ops (``minifuse.fusions``) are the deliberate exception and are
always tested against the composite they replace.
"""
