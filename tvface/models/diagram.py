"""Architecture diagrams drawn from a built temporal encoder (no pasted images).

:func:`draw_layout` stacks the stages that :func:`tvface.models.temporal.describe_layout` walks from
the module; :func:`draw_propagation_grid` draws the second-order grid propagation for ``n_frames``
frames: one column per frame, one row per branch in the module's order, first-order (solid) and
second-order (dashed) alignment edges in each branch's direction, and the dense feeds from earlier
branches of the same frame (dotted).
"""
from __future__ import annotations

from tvface.models.temporal import TemporalEncoder, TemporalEncoders, describe_layout


def _trunk(encoder):
    return encoder.trunk if isinstance(encoder, TemporalEncoder) else encoder.trunk_c


def draw_layout(encoder: TemporalEncoder | TemporalEncoders, ax) -> None:
    """Stages in data-flow order, one box each, propagation branches highlighted."""
    from matplotlib.patches import FancyBboxPatch

    rows = describe_layout(encoder)
    n = len(rows)
    for k, (stage, what) in enumerate(rows):
        y = n - k
        colour = "#cfe0f3" if stage.startswith(("backward", "forward")) else "#eeeeee"
        ax.add_patch(FancyBboxPatch((0, y - 0.35), 10, 0.7, boxstyle="round,pad=0.02", fc=colour, ec="0.3"))
        ax.text(0.25, y, f"{stage}: {what}", va="center", fontsize=8)
        if k:
            ax.annotate("", (5, y + 0.35), (5, y + 0.65), arrowprops={"arrowstyle": "->", "color": "0.3"})
    ax.set_xlim(-0.2, 10.2)
    ax.set_ylim(0.4, n + 0.6)
    ax.axis("off")


def draw_propagation_grid(encoder: TemporalEncoder | TemporalEncoders, n_frames: int, ax) -> None:
    """Frames x branches grid with first- and second-order alignment edges."""
    prop = _trunk(encoder).rnn_propagation
    names = list(prop.names)
    dense = prop.dense
    rows = ["g (features)", *names, "fusion"]
    ys = {name: len(rows) - 1 - r for r, name in enumerate(rows)}
    for name, y in ys.items():
        ax.text(-0.7, y, name, ha="right", va="center", fontsize=8)
    for i in range(n_frames):
        ax.text(i, len(rows) - 0.3, f"frame {i}", ha="center", fontsize=8)
        for name, y in ys.items():
            colour = "#cfe0f3" if name in names else "#eeeeee"
            ax.scatter([i], [y], s=220, c=colour, edgecolors="0.3", zorder=3)
    for name in names:
        y = ys[name]
        step = -1 if name.startswith("backward") else 1  # forward: i-1 -> i; backward: i+1 -> i
        for i in range(n_frames):
            for order, style, rad in ((1, "-", 0.0), (2, "--", -0.35 * step)):
                src = i - step * order
                if 0 <= src < n_frames:
                    ax.annotate("", (i, y), (src, y), arrowprops={
                        "arrowstyle": "->", "ls": style, "color": "tab:blue" if order == 1 else "tab:orange",
                        "connectionstyle": f"arc3,rad={rad}", "shrinkA": 7, "shrinkB": 7})
    # Each branch refines frame i from g_i and the earlier branches' features of frame i.
    for r, name in enumerate(names):
        # dense (paper): g_i and every earlier branch; eq. 7: the previous branch only (g_i for the first)
        feeds = ["g (features)", *names[:r]] if dense else [names[r - 1] if r else "g (features)"]
        for k, src in enumerate(feeds):
            rad = 0.0 if ys[src] - ys[name] == 1 else 0.25 + 0.1 * k
            ax.annotate("", (-0.25, ys[name]), (-0.25, ys[src]), arrowprops={
                "arrowstyle": "->", "ls": ":", "color": "0.45", "shrinkA": 7, "shrinkB": 7,
                "connectionstyle": f"arc3,rad={rad}"})
    ax.plot([], [], "-", color="tab:blue", label="first order (i±1)")
    ax.plot([], [], "--", color="tab:orange", label="second order (i±2, composed flow)")
    ax.plot([], [], ":", color="0.45", label="refinement input" + (" (dense)" if dense else " (eq. 7)"))
    ax.legend(loc="lower right", fontsize=7, frameon=False, bbox_to_anchor=(1.0, -0.12), ncol=3)
    ax.set_xlim(-2.8, n_frames - 0.4)
    ax.set_ylim(-0.8, len(rows) + 0.1)
    ax.axis("off")
