"""Drawing a graph: the DOT file always, a PNG where matplotlib or Graphviz is installed; looking
at a compiled module's graph leaves it in place."""
import os

import pytest

import minifuse as mf
import minifuse.nn as nn
from minifuse import graph as G
from minifuse.graph import draw as draw_module


def small_encoder():
    mf.manual_seed(0)
    model = nn.TransformerEncoder(dict(d_model=8, num_heads=2, intermediate_size=12), 1)
    return model, mf.randn(2, 3, 8), mf.ones(2, 3)


def test_draw_writes_dot_and_png_where_possible(tmp_path):
    g = G.trace(nn.MLP(4, "gelu", bias=True), mf.randn(2, 4))
    written = g.draw(tmp_path / "mlp.png")                       # the suffix is replaced, not doubled
    assert written[0] == str(tmp_path / "mlp.dot")
    assert (tmp_path / "mlp.dot").read_text() == g.to_dot()
    if draw_module.can_draw_png():
        assert written[1] == str(tmp_path / "mlp.png")
        assert (tmp_path / "mlp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert written == [str(tmp_path / "mlp.dot")]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in written)   # no temporary files


def test_draw_without_png_writes_only_dot(tmp_path):
    g = G.trace(nn.MLP(4, "relu"), mf.randn(2, 4))
    assert g.draw(tmp_path / "g", png=False) == [str(tmp_path / "g.dot")]


def test_layout_puts_every_node_below_its_inputs():
    model, x, mask = small_encoder()
    g = G.trace(model, x, mask)
    pos = draw_module.layout(g)
    for n in g.nodes:
        for i in n.inputs:
            if i.id in pos:
                assert pos[i.id][1] < pos[n.id][1]
    assert len(set(pos.values())) == len(pos)                    # no two nodes on one spot


def test_compiled_graph_can_be_looked_at_without_removing_it():
    model, x, mask = small_encoder()
    fast = mf.compile(model, x, mask)
    assert fast.graph.ops() == ["FusedTransformerLayer"]
    assert "FusedTransformerLayer" in str(fast.graph)
    assert len(fast.graphs) == 1 and fast.graph is next(iter(fast.graphs.values()))
    fast(mf.randn(1, 4, 8), mf.ones(1, 4))                       # a new shape: its graph is now the latest
    assert len(fast.graphs) == 2 and fast.graph.nodes[0].shape == (1, 4, 8)


def test_graph_before_any_trace_is_a_clear_error():
    model, _, _ = small_encoder()
    with pytest.raises(RuntimeError, match="no graph yet"):
        mf.compile(model).graph
