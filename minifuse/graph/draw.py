"""Pictures of a graph: a Graphviz DOT file always, a PNG where Graphviz or matplotlib is here.

    paths = graph.draw("encoder")        # encoder.dot, and encoder.png if it can be drawn
    compiled.graph.draw("compiled")      # the graph a compiled module ran last

The PNG comes from Graphviz's ``dot`` program when it is on PATH (the best layout), else from
matplotlib (nodes in rows by their depth from the inputs, fused nodes shaded).
"""
import os
import shutil
import subprocess

from ..atomic import write_atomic

FUSED_COLOR = "#ffd8a8"


def draw(graph, path, png=True):
    """Write ``graph`` as DOT to ``path`` with the suffix .dot and, with ``png``, a picture to the
    suffix .png. Returns the paths written; without Graphviz and matplotlib only the DOT file."""
    stem = os.fspath(path)
    if os.path.splitext(stem)[1].lower() in (".dot", ".png"):
        stem = os.path.splitext(stem)[0]
    dot_text = graph.to_dot()
    write_atomic(stem + ".dot", lambda f: f.write(dot_text.encode("utf-8")))
    written = [stem + ".dot"]
    if png and (_png_with_graphviz(dot_text, stem + ".png") or _png_with_matplotlib(graph, stem + ".png")):
        written.append(stem + ".png")
    return written


def can_draw_png():
    """Whether ``draw`` can make a PNG here (Graphviz's dot on PATH, or matplotlib installed)."""
    import importlib.util
    return bool(shutil.which("dot")) or importlib.util.find_spec("matplotlib") is not None


def _png_with_graphviz(dot_text, png_path):
    exe = shutil.which("dot")
    if exe is None:
        return False
    result = subprocess.run([exe, "-Tpng"], input=dot_text.encode("utf-8"), capture_output=True)
    if result.returncode != 0:
        return False
    write_atomic(png_path, lambda f: f.write(result.stdout))
    return True


def layout(graph):
    """node id -> (column, row): a node's row is one more than its deepest input's; a source sits
    just above its first consumer. Constants are left out, as in ``to_dot``."""
    row = {}
    for n in graph.nodes:
        row[n.id] = 1 + max((row.get(i.id, 0) for i in n.inputs if not i.is_source), default=0)
    for n in graph.nodes:
        for i in n.inputs:
            if i.op in ("Input", "Param"):
                row[i.id] = min(row.get(i.id, row[n.id] - 1), row[n.id] - 1)
    placed, columns = {}, {}
    for node_id in sorted(row, key=lambda k: (row[k], k)):
        col = columns.get(row[node_id], 0)
        columns[row[node_id]] = col + 1
        placed[node_id] = (col, row[node_id])
    return placed


def _png_with_matplotlib(graph, png_path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pos = layout(graph)
    nodes = {n.id: n for n in graph.nodes}
    nodes.update({i.id: i for n in graph.nodes for i in n.inputs if i.id in pos})
    width = max(c for c, _ in pos.values()) + 1
    height = max(r for _, r in pos.values()) + 1
    fig, ax = plt.subplots(figsize=(max(4.0, 1.9 * width), max(3.0, 0.55 * height)))
    for node_id, (c, r) in pos.items():
        for i in nodes[node_id].inputs:
            if i.id in pos:
                ci, ri = pos[i.id]
                ax.annotate("", xy=(c, -r), xytext=(ci, -ri),
                            arrowprops=dict(arrowstyle="->", color="0.55", lw=0.7, shrinkA=7, shrinkB=7))
    for node_id, (c, r) in pos.items():
        n = nodes[node_id]
        color = FUSED_COLOR if n.op.startswith("Fused") else "#e7f0fa" if n.is_source else "white"
        ax.text(c, -r, f"{n.label()}\n{n.shape}", ha="center", va="center", fontsize=6.5,
                bbox=dict(boxstyle="round,pad=0.3", fc=color, ec="0.3", lw=0.6))
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-height + 0.3, 0.7)
    ax.axis("off")
    fig.tight_layout()
    write_atomic(png_path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True
