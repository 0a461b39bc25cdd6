"""pareto.png: median latency (x) against mAP (y), one labelled point per ok variant,
the Pareto front drawn per (model, backend, device) group and FP32 highlighted.

Uses matplotlib's object API with the Agg canvas: no pyplot global state, no display.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.atomic import atomic_write_bytes
from bench.report.display import title_of
from bench.report.rows import REFERENCE_VARIANT, ResultRow


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    latency_ms: float
    map: float
    group: tuple
    reference: bool


def pareto_points(rows: Iterable[ResultRow]) -> list[ParetoPoint]:
    """One point per ok row that has both mAP and a median latency."""
    rows = [r for r in rows if r.ok and r.map is not None and r.latency_ms is not None]
    several = len({r.group for r in rows}) > 1
    return [ParetoPoint(label=f"{r.variant} ({r.backend}, {r.device})" if several else r.variant,
                        latency_ms=r.latency_ms.median, map=r.map, group=r.group,
                        reference=r.variant == REFERENCE_VARIANT) for r in rows]


def pareto_front(points: Iterable[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point beats on both latency (lower) and mAP (higher), by latency."""
    front: list[ParetoPoint] = []
    for point in sorted(points, key=lambda p: (p.latency_ms, -p.map)):
        if not front or point.map > front[-1].map:
            front.append(point)
    return front


def _draw_group(ax, points: list[ParetoPoint], color: str) -> None:
    plain = [p for p in points if not p.reference]
    ref = [p for p in points if p.reference]
    if plain:
        ax.scatter([p.latency_ms for p in plain], [p.map for p in plain], color=color,
                   s=36, zorder=3, gid="variants")
    if ref:
        ax.scatter([p.latency_ms for p in ref], [p.map for p in ref], color="crimson",
                   marker="*", s=160, zorder=4, gid="fp32", label="fp32 (reference)")
    front = pareto_front(points)
    ax.plot([p.latency_ms for p in front], [p.map for p in front], linestyle="--",
            color=color, alpha=0.6, zorder=2, gid="pareto-front", label="Pareto front")
    for p in points:
        ax.annotate(p.label, (p.latency_ms, p.map), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)


def pareto_figure(rows: Iterable[ResultRow]) -> Figure:
    """The figure (not saved); an explanatory text replaces the axes' data when empty."""
    rows = list(rows)
    fig = Figure(figsize=(7.5, 4.8), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.92)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = pareto_points(rows)
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
    for index, group in enumerate(dict.fromkeys(p.group for p in points)):
        _draw_group(ax, [p for p in points if p.group == group], colors[index % len(colors)])
    if points:
        ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
        ax.legend(loc="lower right", fontsize=8)
    if not points:
        ax.text(0.5, 0.5, "no ok variant with both mAP and latency", ha="center",
                transform=ax.transAxes)
    ax.set(xlabel="median latency (ms)", ylabel="mAP@[.5:.95]",
           title=f"Latency vs accuracy: {title_of(rows)}")
    ax.grid(True, alpha=0.3)
    return fig


def write_pareto(rows: Iterable[ResultRow], path: Path) -> Path:
    """Render pareto.png and write it atomically."""
    buffer = io.BytesIO()
    pareto_figure(rows).savefig(buffer, format="png")
    return atomic_write_bytes(Path(path), buffer.getvalue())
