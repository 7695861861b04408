"""Fusion passes: each rewrites a pattern of primitive nodes into one fused node.

Every pass is a class with ``name`` and ``run(graph) -> graph``; ``requires`` names the passes
that must have run before it (``fuse`` checks the order). A candidate that does not fuse is
added to ``graph.report`` with the reason.
"""
from __future__ import annotations

import numpy as np

from ..dtypes import finfo
from ..kernels.activations import GATES, graph_activation
from ..kernels.checks import flat_rows, mask_values
from ..kernels.layout import head_scale
from ..kernels.weights import LayerWeights
from ..nn.dispatch import attention_method, packed_attention_method
from ..nn.fused import attention_block, packed
from .ir import Node


class Pass:
    """A rewrite of the graph. A fusing pass also names the node it creates (``fused_op``) and how
    a backend runs it (``execute(K, node, *arrays)`` on kernel package ``K``, the entry points every
    kernel backend has): a new fusion is one class here."""
    name = "Pass"
    requires = ()
    fused_op = None

    def run(self, graph):
        raise NotImplementedError

    def __repr__(self):
        return self.name


class _Matcher:
    """Helpers the passes share: who uses a node, and whether a block of nodes is closed."""

    def __init__(self, graph):
        self.graph = graph
        self.users = graph.consumers()

    def uses(self, node):
        return self.users.get(id(node), [])

    def only_user(self, node):
        """The single consumer of ``node``, or None (several, none, or a graph output)."""
        users = self.uses(node)
        if len(users) != 1 or self.graph.is_output(node):
            return None
        return users[0]

    def closed(self, block, final):
        """Every node of ``block`` but ``final`` is used only inside the block: safe to fuse."""
        ids = {id(n) for n in block}
        for n in block:
            if n is final:
                continue
            if self.graph.is_output(n) or any(id(u) not in ids for u in self.uses(n)):
                return False
        return True

    def report(self, pass_name, node, reason):
        self.graph.report.append((pass_name, node, reason))


def _scalar(node, name):
    """The scalar operand ``name`` of an elementwise node (a literal or a 0-d Const), or None."""
    v = node.arg(name)
    if isinstance(v, Node):
        v = v.value.data if v.op == "Const" else None
    if v is None or np.ndim(v) != 0:
        return None
    return float(v)


def _vector(K, b, size):
    """A rank <= 1 bias as a (size,) vector (a scalar bias is broadcast), passed on as it is when it
    already is one (a broadcast view is read-only, which a CUDA launch under the simulator refuses)."""
    if b is None or b.shape == (size,):
        return b
    return K.xp.broadcast_to(b, (size,)).copy()


def _linear(K, x, w, b, activation, layout):
    if layout == "out_in":
        return K.linear_act(x, w, _vector(K, b, w.shape[0]), activation)
    y = K.xp.matmul(x, w)  # (in, out) weight: the GEMM as it is, then the same fused epilogue
    K.bias_act_(flat_rows(y, y.shape[-1]), _vector(K, b, w.shape[1]), activation)
    return y


def _is_weight_transpose(node):
    return node.op == "Permute" and tuple(node.attrs.get("dims", ())) == (1, 0)


class FuseMatMulBiasAct(Pass):
    """x @ W (+ b) (-> an activation of kernels/activations.py)  ->  FusedMatMulBiasAct[x, w, (b)].

    The matmul must have one consumer; the bias an operand of rank <= 1; the activation one
    consumer of the sum. W may be ``w.T`` of a 2-D tensor (Linear's layout, 'out_in') or 2-D."""
    name = "FuseMatMulBiasAct"
    fused_op = "FusedMatMulBiasAct"

    @staticmethod
    def execute(K, node, x, w, b=None):
        """The fused node on kernel package ``K`` (the graph backend's)."""
        return _linear(K, x, w, b, node.attrs["activation"], node.attrs["layout"])

    def run(self, graph):
        m = _Matcher(graph)
        for mm in [n for n in graph.nodes if n.op == "MatMul"]:
            x, wn = mm.inputs
            if wn.op == "Permute" and _is_weight_transpose(wn) and m.only_user(wn) is mm:
                w, layout, block = wn.inputs[0], "out_in", [wn, mm]
            elif len(wn.shape) == 2:
                w, layout, block = wn, "in_out", [mm]
            else:
                continue  # a batched matmul (attention scores): not a linear layer
            if x.shape == () or len(x.shape) < 1:
                continue
            users = m.uses(mm)
            if graph.is_output(mm) or len(users) != 1:
                m.report(self.name, mm, "matmul output is a graph output" if graph.is_output(mm)
                         else f"matmul output has {len(users)} consumers")
                continue
            end, bias, act = mm, None, None
            add = users[0]
            if add.op == "Add":
                other = add.inputs[1] if add.inputs[0] is mm else add.inputs[0]
                if len(other.shape) <= 1 and other is not mm:
                    bias, end = other, add
                    block.append(add)
                else:
                    m.report(self.name, add, f"bias rank {len(other.shape)} > 1")
            nxt = m.only_user(end)
            act = None if nxt is None else graph_activation(nxt.op, nxt.attrs)
            if act is not None:
                end = nxt
                block.append(nxt)
            if bias is None and act is None:
                m.report(self.name, mm, "no bias and no activation to fuse")
                continue
            inputs = [x, w] + ([bias] if bias is not None else [])
            fused = Node("FusedMatMulBiasAct", inputs, {"activation": act or "none", "layout": layout,
                                                         "has_bias": bias is not None},
                         shape=end.shape, dtype=end.dtype)
            graph.replace(block, fused)
            m = _Matcher(graph)
        return graph


def _half_slice(node, ndim):
    """(start, stop) when ``node`` is Index taking a slice of the last dim only, else None."""
    if node.op != "Index":
        return None
    key = node.attrs.get("key")
    if not isinstance(key, tuple) or len(key) != ndim:
        return None
    if any(k != slice(None) for k in key[:-1]) or not isinstance(key[-1], slice) or key[-1].step not in (None, 1):
        return None
    return key[-1].start, key[-1].stop


class FuseBiasSwiGLU(Pass):
    """FusedMatMulBiasAct(no act) -> split in halves -> silu(first) * second  ->  FusedBiasSwiGLU.
    (sigmoid(first) * second, GLU, fuses too with gate='sigmoid')."""
    name = "FuseBiasSwiGLU"
    requires = ("FuseMatMulBiasAct",)
    fused_op = "FusedBiasSwiGLU"

    @staticmethod
    def execute(K, node, x, w, b=None):
        y = _linear(K, x, w, None, "none", node.attrs["layout"])
        return K.bias_glu(y, _vector(K, b, y.shape[-1]), node.attrs["gate"])

    def run(self, graph):
        m = _Matcher(graph)
        for f in [n for n in graph.nodes if n.op == "FusedMatMulBiasAct" and n.attrs["activation"] == "none"]:
            users = m.uses(f)
            width = f.shape[-1]
            halves = {_half_slice(u, len(f.shape)): u for u in users}
            a, b = halves.get((0, width // 2)), halves.get((width // 2, width))
            if len(users) != 2 or a is None or b is None or graph.is_output(f):
                continue
            gate = m.only_user(a)
            gate_name = None if gate is None else graph_activation(gate.op, gate.attrs)
            if gate_name not in GATES:
                continue
            prod = m.only_user(gate)
            if prod is None or prod.op != "Mul" or {id(i) for i in prod.inputs} != {id(gate), id(b)}:
                m.report(self.name, gate, "gate is not multiplied by the second half")
                continue
            block = [f, a, b, gate, prod]
            if not m.closed(block, prod):
                m.report(self.name, prod, "an intermediate of the gate is used elsewhere")
                continue
            fused = Node("FusedBiasSwiGLU", list(f.inputs),
                         dict(f.attrs, gate=gate_name),
                         shape=prod.shape, dtype=prod.dtype)
            graph.replace(block, fused)
            m = _Matcher(graph)
        return graph


class FuseResidualLN(Pass):
    """LayerNorm(a + b) over the last dim, the sum used once and not an output
    ->  FusedResidualLN[a, b, gamma, beta]."""
    name = "FuseResidualLN"
    fused_op = "FusedResidualLN"

    @staticmethod
    def execute(K, node, x, residual, gamma, beta):
        return K.residual_layer_norm(x, residual, gamma, beta, node.attrs["eps"])

    def run(self, graph):
        m = _Matcher(graph)
        for ln in [n for n in graph.nodes if n.op == "LayerNorm"]:
            add = ln.arg("input")
            if add.op != "Add" or ln.attrs.get("ndim", 1) != 1:
                continue
            if graph.is_output(add):
                m.report(self.name, add, "residual sum is a graph output")
                continue
            if len(m.uses(add)) != 1:
                m.report(self.name, add, f"residual sum has {len(m.uses(add))} consumers")
                continue
            a, b = add.inputs
            if a.shape != b.shape:
                m.report(self.name, add, f"residual add broadcasts {a.shape} with {b.shape}")
                continue
            gamma, beta = ln.arg("weight"), ln.arg("bias")
            if not isinstance(gamma, Node) or not isinstance(beta, Node):
                m.report(self.name, ln, "LayerNorm without weight and bias")
                continue
            fused = Node("FusedResidualLN", [a, b, gamma, beta], {"eps": ln.attrs["eps"]},
                         shape=ln.shape, dtype=ln.dtype)
            graph.replace([add, ln], fused)
            m = _Matcher(graph)
        return graph


class FuseAttentionBlock(Pass):
    """QKV projection -> heads -> q k^T * scale (+ key-padding mask) -> softmax -> @ v -> merge heads
    -> output projection  ->  FusedAttentionBlock[x, qkv_w, out_w, (qkv_b, out_b), (mask)].

    attrs["method"]: 'loop' or 'bmm' by ``nn.dispatch.attention_method``, the same choice as eager."""
    name = "FuseAttentionBlock"
    requires = ("FuseMatMulBiasAct",)
    fused_op = "FusedAttentionBlock"

    @staticmethod
    def execute(K, node, x, qkv_w, out_w, *rest):
        a = node.attrs
        qkv_b, out_b = (rest[0], rest[1]) if a["has_bias"] else (None, None)
        mask = _mask_arg(node, rest[-1]) if a["has_mask"] else None
        if a.get("zero_padding"):      # zeros at padded positions: packed when the batch packs
            return attention_block(K, x, qkv_w, qkv_b, out_w, out_b, mask, a["num_heads"], a["scale"], a["method"])
        qkv = K.linear_act(x, qkv_w, qkv_b, "none")
        context = K.attention_packed(qkv, mask, a["num_heads"], a["scale"], method=a["method"])
        return K.linear_act(context, out_w, out_b, "none")

    def run(self, graph):
        m = _Matcher(graph)
        for sm in [n for n in graph.nodes if n.op == "Softmax"]:
            found = self._match(m, sm)
            if isinstance(found, str):
                if found:
                    m.report(self.name, sm, found)
                continue
            block, qkv, out, mask, heads, scale = found
            batch, seq = qkv.shape[0], qkv.shape[1]
            method = attention_method(batch, seq)
            if not m.closed(block, out):
                m.report(self.name, sm, "an intermediate of the attention block is used elsewhere")
                continue
            has_bias = qkv.attrs["has_bias"] and out.attrs["has_bias"]
            if qkv.attrs["has_bias"] != out.attrs["has_bias"]:
                m.report(self.name, sm, "only one of the two projections has a bias")
                continue
            inputs = [qkv.inputs[0], qkv.inputs[1], out.inputs[1]]
            if has_bias:
                inputs += [qkv.inputs[2], out.inputs[2]]
            zeroed = None
            if mask is not None:
                inputs.append(mask)
                zeroed = _zeroed_padding(m, out, mask)   # MultiHeadAttention's output: zeros at padding
                if zeroed is not None:
                    block += zeroed
            fused = Node("FusedAttentionBlock", inputs,
                         {"num_heads": heads, "scale": scale, "has_bias": has_bias, "has_mask": mask is not None,
                          "method": method, "zero_padding": zeroed is not None},
                         shape=out.shape, dtype=out.dtype)
            graph.replace(block, fused)
            m = _Matcher(graph)
        return graph

    @staticmethod
    def _heads(node, qkv, block_index):
        """Permute(Reshape(Index(qkv, block)), (0, 2, 1, 3)) -> (the three nodes, heads) or None."""
        if node.op != "Permute" or tuple(node.attrs["dims"]) != (0, 2, 1, 3):
            return None
        rs = node.inputs[0]
        if rs.op != "Reshape" or len(rs.shape) != 4:
            return None
        ix = rs.inputs[0]
        d = qkv.shape[-1] // 3
        if ix.inputs[0] is not qkv or _half_slice(ix, 3) != (block_index * d, (block_index + 1) * d):
            return None
        return [node, rs, ix], rs.shape[2]

    def _match(self, m, sm):
        """The attention block around softmax ``sm``, or a reason string ('' = not attention)."""
        if sm.attrs.get("dim") not in (-1, 3) or len(sm.shape) != 4:
            return ""
        block = [sm]
        scores, mask = sm.inputs[0], None
        if scores.op == "Add":  # + mask bias
            mb = next((i for i in scores.inputs if i.op == "Reshape"), None)
            mask = self._mask_input(mb)
            if mask is None:
                return "the added score bias is not a key-padding mask"
            other = scores.inputs[0] if scores.inputs[1] is mb else scores.inputs[1]
            block += [scores] + self._mask_nodes(mb)
            scores = other
        scale = _scalar(scores, "other") if scores.op == "Mul" else None
        if scale is None:
            return "scores are not scaled by a constant"
        block.append(scores)
        qk = scores.inputs[0]
        if qk.op != "MatMul":
            return "scores are not q @ k^T"
        q, kt = qk.inputs
        if kt.op != "Permute" or tuple(kt.attrs["dims"]) != (0, 1, 3, 2):
            return "keys are not transposed heads"
        block += [qk, kt]
        pv = m.only_user(sm)
        if pv is None or pv.op != "MatMul" or pv.inputs[0] is not sm:
            return "probabilities are not multiplied by the values"
        merge = m.only_user(pv)
        if merge is None or merge.op != "Permute" or tuple(merge.attrs["dims"]) != (0, 2, 1, 3):
            return "context heads are not merged"
        flat = m.only_user(merge)
        out = m.only_user(flat) if flat is not None else None
        if flat is None or flat.op != "Reshape" or out is None or out.op != "FusedMatMulBiasAct" \
                or out.attrs["activation"] != "none" or out.attrs["layout"] != "out_in":
            return "no output projection after the context"
        block += [pv, merge, flat, out]
        qkv = q.inputs[0].inputs[0].inputs[0] if q.op == "Permute" and q.inputs[0].op == "Reshape" else None
        if qkv is None or qkv.op != "FusedMatMulBiasAct" or qkv.attrs["activation"] != "none" \
                or qkv.attrs["layout"] != "out_in":
            return "q, k, v do not come from one fused QKV projection"
        parts = [self._heads(n, qkv, i) for i, n in enumerate((q, kt.inputs[0], pv.inputs[1]))]
        if any(p is None for p in parts) or len({p[1] for p in parts}) != 1:
            return "q, k, v are not the three column blocks of the QKV projection"
        for nodes, _ in parts:
            block += nodes
        block.append(qkv)
        return block, qkv, out, mask, parts[0][1], scale

    @staticmethod
    def _mask_nodes(mb):
        mul = mb.inputs[0]
        sub = mul.arg("input")
        cast = sub.arg("other")
        return [mb, mul, sub] + ([cast] if cast.op == "Cast" else [])

    @staticmethod
    def _mask_input(mb):
        """The (B, S) mask behind Reshape((1 - Cast(mask)) * finfo.min), or None."""
        if mb is None or len(mb.shape) != 4 or mb.shape[1:3] != (1, 1):
            return None
        mul = mb.inputs[0]
        if mul.op != "Mul" or _scalar(mul, "other") != float(finfo(mb.dtype).min):
            return None
        sub = mul.arg("input")
        if not isinstance(sub, Node) or sub.op != "Sub" or _scalar(sub, "input") != 1.0:
            return None
        mask = sub.arg("other")
        if isinstance(mask, Node) and mask.op == "Cast":  # an integer or bool mask is cast first
            mask = mask.inputs[0]
        if not isinstance(mask, Node) or len(mask.shape) != 2:
            return None
        return mask


def _mask_arg(node, mask):
    """A fused node's key mask, checked as the layers check their 'attention_mask' (the name the
    traced model's argument has): bool or 0/1 numbers."""
    mask_values(f"compiled {node.op}", "attention_mask", mask)
    return mask


def _zeroed_padding(m, node, mask):
    """[Where, Reshape, Compare, (Cast)]: ``where(Reshape(Cast(mask) != 0, (B, S, 1)), node, 0)``,
    the layers' zeroed padded positions (``nn.attention.zero_padding``), when that is node's only
    use; else None."""
    where = m.only_user(node)
    if (where is None or where.op != "Where" or len(where.inputs) != 2 or where.inputs[1] is not node
            or not _is_zero(where.attrs.get("other"))):
        return None
    keep = where.inputs[0]
    if not isinstance(keep, Node) or keep.op != "Reshape" or tuple(keep.shape) != tuple(node.shape[:2]) + (1,):
        return None
    ne = keep.inputs[0]
    if ne.op != "Compare" or ne.attrs.get("op") != "ne" or len(ne.inputs) != 1 or not _is_zero(ne.attrs.get("other")):
        return None
    nodes = [where, keep, ne]
    src = ne.inputs[0]
    if src.op == "Cast":
        nodes.append(src)
        src = src.inputs[0]
    return nodes if src is mask and all(m.only_user(n) is not None for n in nodes[1:]) else None


def _is_zero(value):
    """A scalar constant operand that is 0 (a Python number or a 0-d array)."""
    return value is not None and np.ndim(value) == 0 and float(value) == 0


class FuseTransformerLayer(Pass):
    """The post-LN BERT layer, after the three passes above:
        h = FusedResidualLN(x, FusedAttentionBlock(x)); out = FusedResidualLN(h, fc2(act(fc1(h))))
    ->  FusedTransformerLayer with a 14-input layout [hidden, qkv_w, qkv_b, out_w, out_b,
        ln1_g, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_g, ln2_b, mask] (mask left out if absent)."""
    name = "FuseTransformerLayer"
    requires = ("FuseMatMulBiasAct", "FuseResidualLN", "FuseAttentionBlock")
    fused_op = "FusedTransformerLayer"

    @staticmethod
    def execute(K, node, x, *inputs):
        a = node.attrs
        mask = _mask_arg(node, inputs[12]) if a["has_mask"] else None
        weights = LayerWeights(*inputs[:12])
        p = packed(K, x, mask)
        if p is not None:             # the real tokens only (zeros at padded positions either way)
            rows, pk = p
            method = packed_attention_method(x.shape[-1] // a["num_heads"], a["method"], x.shape[0])
            return K.unpack(K.transformer_layer_varlen(rows, pk, weights, a["num_heads"], a["eps"], a["activation"],
                                                       method), pk)
        return K.transformer_layer(x, weights, mask, a["num_heads"], a["eps"], a["activation"], a["method"])

    def run(self, graph):
        m = _Matcher(graph)
        for ln2 in [n for n in graph.nodes if n.op == "FusedResidualLN"]:
            found = self._match(ln2)
            if found is None:
                continue
            if isinstance(found, str):
                m.report(self.name, ln2, found)
                continue
            block, inputs, attrs = found
            final = ln2
            if attrs["has_mask"]:         # TransformerLayer's output: zeros at padding, as the kernel's
                zeroed = _zeroed_padding(m, ln2, inputs[13])
                if zeroed is None:
                    m.report(self.name, ln2, "the layer's output at padded positions is not zeroed")
                    continue
                block += zeroed
                final = zeroed[0]
            if not m.closed(block, final):
                m.report(self.name, ln2, "an intermediate of the layer is used elsewhere")
                continue
            graph.replace(block, Node("FusedTransformerLayer", inputs, attrs, shape=final.shape, dtype=final.dtype))
            m = _Matcher(graph)
        return graph

    @staticmethod
    def _match(ln2):
        a, b = ln2.inputs[:2]
        for h1, fc2 in ((a, b), (b, a)):
            if h1.op == "FusedResidualLN" and fc2.op == "FusedMatMulBiasAct":
                break
        else:
            return None
        fc1 = fc2.inputs[0]
        if fc2.attrs["activation"] != "none" or fc1.op != "FusedMatMulBiasAct" or fc1.inputs[0] is not h1:
            return None
        p, q = h1.inputs[:2]
        for x, attn in ((p, q), (q, p)):
            if attn.op == "FusedAttentionBlock" and attn.inputs[0] is x:
                break
        else:
            return None
        if not (attn.attrs["has_bias"] and fc1.attrs["has_bias"] and fc2.attrs["has_bias"]):
            return "a projection of the layer has no bias"
        if fc1.attrs["layout"] != "out_in" or fc2.attrs["layout"] != "out_in":
            return "feed-forward weights are not in Linear's layout"
        if h1.attrs["eps"] != ln2.attrs["eps"]:
            return "the two LayerNorms use different eps"
        head_dim = attn.shape[-1] // attn.attrs["num_heads"]
        if not np.isclose(attn.attrs["scale"], head_scale(head_dim), rtol=1e-6):
            return f"attention scale {attn.attrs['scale']} is not 1/sqrt(head_dim)"
        x, qkv_w, out_w, qkv_b, out_b = attn.inputs[:5]
        inputs = [x, qkv_w, qkv_b, out_w, out_b, h1.inputs[2], h1.inputs[3], fc1.inputs[1], fc1.inputs[2],
                  fc2.inputs[1], fc2.inputs[2], ln2.inputs[2], ln2.inputs[3]]
        if attn.attrs["has_mask"]:
            inputs.append(attn.inputs[5])
        attrs = {"num_heads": attn.attrs["num_heads"], "scale": attn.attrs["scale"], "eps": h1.attrs["eps"],
                 "activation": fc1.attrs["activation"], "has_mask": attn.attrs["has_mask"],
                 "method": attn.attrs["method"]}
        return [attn, h1, fc1, fc2, ln2], inputs, attrs


class DeadCodeElimination(Pass):
    """Drop computing nodes whose values nothing uses."""
    name = "DeadCodeElimination"

    def run(self, graph):
        live = {id(o) for o in graph.outputs}
        kept = []
        for n in reversed(graph.nodes):
            if id(n) in live:
                kept.append(n)
                live.update(id(i) for i in n.inputs)
        graph.nodes = kept[::-1]
        return graph


class Unfuse(Pass):
    """Expand the fused nodes that ``backend`` does not implement back into what they replaced
    (recursively: a FusedTransformerLayer first becomes its attention block, LayerNorms and
    projections). Exact: the original nodes come back."""
    name = "Unfuse"

    def __init__(self, backend):
        from .backends import get_backend
        self.backend = get_backend(backend)

    def run(self, graph):
        changed = True
        while changed:
            changed = False
            for n in list(graph.nodes):
                if n.subgraph is not None and n.op not in self.backend.fused_ops:
                    graph.expand(n)
                    changed = True
        return graph


# The fusing passes in the order that works (each one's ``requires`` before it): ``fuse`` runs them,
# and every kernel backend implements the nodes they create.
FUSING_PASSES = (FuseMatMulBiasAct, FuseBiasSwiGLU, FuseResidualLN, FuseAttentionBlock, FuseTransformerLayer)
