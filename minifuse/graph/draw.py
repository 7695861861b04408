"""Pictures of a graph: a Graphviz DOT file always, a PNG where Graphviz or matplotlib is here.

    paths = graph.draw("encoder")        # encoder.dot, and encoder.png if it can be drawn
    compiled.graph.draw("compiled")      # the graph a compiled module ran last

The PNG comes from Graphviz's ``dot`` program when it is on PATH (the best layout), else from
matplotlib (nodes in rows by their depth from the inputs, fused nodes shaded, each node
labelled with its op, shape and how many parameters it reads).
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
    """node id -> (x, row) for the picture: a node's row is one more than its deepest input's; the
    graph's inputs, and nodes that read only sources, sit just above their first consumer; each
    row is centred. Parameters and
    constants are not placed: the picture counts a node's parameters in its label instead."""
    row = {}
    for n in graph.nodes:
        row[n.id] = 1 + max((row.get(i.id, 0) for i in n.inputs if not i.is_source), default=0)
    users = graph.consumers()
    for n in reversed(graph.nodes):      # a node of sources only (a weight's transpose) sits above its use
        if all(i.is_source for i in n.inputs) and users.get(id(n)):
            row[n.id] = min(row[u.id] for u in users[id(n)]) - 1
    for n in graph.nodes:
        for i in n.inputs:
            if i.op == "Input":
                row[i.id] = min(row.get(i.id, row[n.id] - 1), row[n.id] - 1)
    rows = {}
    for node_id in sorted(row, key=lambda k: (row[k], k)):
        rows.setdefault(row[node_id], []).append(node_id)
    return {node_id: (col - (len(ids) - 1) / 2, r) for r, ids in rows.items() for col, node_id in enumerate(ids)}


def _label(node):
    params = sum(i.op == "Param" for i in node.inputs)
    extra = f"\n+{params} parameter{'s' if params > 1 else ''}" if params else ""
    return f"{node.label()}\n{node.shape}{extra}"


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
    xs = [x for x, _ in pos.values()]
    height = max(r for _, r in pos.values()) + 1
    fig, ax = plt.subplots(figsize=(max(4.0, 1.9 * (max(xs) - min(xs) + 1)), max(2.5, 0.7 * height)))
    for node_id, (x, r) in pos.items():
        for i in nodes[node_id].inputs:
            if i.id in pos:
                xi, ri = pos[i.id]
                ax.annotate("", xy=(x, -r), xytext=(xi, -ri),
                            arrowprops=dict(arrowstyle="-|>", color="0.45", lw=0.7, shrinkA=9, shrinkB=9))
    for node_id, (x, r) in pos.items():
        n = nodes[node_id]
        color = FUSED_COLOR if n.op.startswith("Fused") else "#e7f0fa" if n.is_source else "white"
        ax.text(x, -r, _label(n), ha="center", va="center", fontsize=6.5,
                bbox=dict(boxstyle="round,pad=0.3", fc=color, ec="0.3", lw=0.6))
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(-height + 0.4, 0.6 - min(r for _, r in pos.values()))
    ax.axis("off")
    fig.tight_layout()
    write_atomic(png_path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True
