"""Pictures for the examples, with matplotlib when it is installed (``pip install matplotlib``).

Every function saves a PNG in the current directory, prints its name, and returns it; without
matplotlib it prints why there is no picture and returns None. Labels are kept inside the
picture (``bbox_inches='tight'``).
"""
import sys

_warned = False


def pyplot():
    """matplotlib.pyplot (drawing off-screen outside a notebook), or None when not installed."""
    global _warned
    try:
        import matplotlib
    except ImportError:
        if not _warned:
            print("(matplotlib is not installed, so no pictures: pip install matplotlib)")
            _warned = True
        return None
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, name):
    """Write ``fig`` to ``name`` (a .png path) and close it."""
    plt = pyplot()
    fig.savefig(name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {name}")
    return name


def loss_curve(name, losses, xlabel="step", title="training loss", log=True):
    """One line: the loss per step (or epoch), on a log scale by default."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(range(len(losses)), losses)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return save(fig, name)


def time_bars(name, title, workloads, times_ms, series=("unfused", "fused")):
    """Grouped bars: for each workload, one bar per series (milliseconds), values written on top."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(max(4.5, 2.4 * len(workloads)), 3.6))
    width = 0.8 / len(series)
    for k, label in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(workloads))]
        values = [row[k] for row in times_ms]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("median time (ms)")
    ax.set_title(title)
    ax.margins(y=0.15)
    ax.legend()
    return save(fig, name)
