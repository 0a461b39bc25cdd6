"""pareto.png: latency (x) against mAP (y), one labelled point per ok variant, with its
confidence intervals as error bars, the Pareto front drawn per (model, backend, device)
group and FP32 highlighted.

x is paired with fp32, as the speedup column is: a variant sits at fp32's median divided
by its speedup (the median of block ratios timed beside fp32), so the plot and the table
never disagree about which is faster; rows without a paired speedup use their own median.

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
    latency_range: tuple[float, float] | None = None  # the CI, in ms
    map_range: tuple[float, float] | None = None


def pareto_points(rows: Iterable[ResultRow]) -> list[ParetoPoint]:
    """One point per ok row that has both mAP and a median latency."""
    rows = [r for r in rows if r.ok and r.map is not None and r.latency_ms is not None]
    several = len({r.group for r in rows}) > 1
    refs = {r.group: r for r in rows if r.variant == REFERENCE_VARIANT}
    return [ParetoPoint(label=f"{r.variant} ({r.backend}, {r.device})" if several else r.variant,
                        latency_ms=x, map=r.map, group=r.group,
                        reference=r.variant == REFERENCE_VARIANT, latency_range=x_range,
                        map_range=_map_range(r, refs.get(r.group)))
            for r in rows for x, x_range in [_paired_latency(r, refs.get(r.group))]]


def _paired_latency(row: ResultRow, fp32: ResultRow | None
                    ) -> tuple[float, tuple[float, float] | None]:
    lat = row.latency_ms
    if fp32 is None or row is fp32 or not row.speedup_vs_fp32:
        ci = (lat.ci_low, lat.ci_high) if lat.ci_low is not None else None
        return lat.median, ci
    base = fp32.latency_ms.median
    ci = ((base / row.speedup_high, base / row.speedup_low)
          if row.speedup_low and row.speedup_high else None)
    return base / row.speedup_vs_fp32, ci


def _map_range(row: ResultRow, fp32: ResultRow | None) -> tuple[float, float] | None:
    if fp32 is None or row.delta_map_low is None or row.delta_map_high is None:
        return None
    return fp32.map + row.delta_map_low, fp32.map + row.delta_map_high


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
    for p in points:
        if p.latency_range or p.map_range:
            xerr = ([[p.latency_ms - p.latency_range[0]], [p.latency_range[1] - p.latency_ms]]
                    if p.latency_range else None)
            yerr = ([[p.map - p.map_range[0]], [p.map_range[1] - p.map]]
                    if p.map_range else None)
            ax.errorbar([p.latency_ms], [p.map], xerr=xerr, yerr=yerr, fmt="none",
                        ecolor=color, alpha=0.5, capsize=3, zorder=2, gid="ci")
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
    ax.set(xlabel="latency (ms): fp32's median / speedup (paired), 95 % CI",
           ylabel="mAP@[.5:.95] (95 % CI of ΔmAP vs fp32)",
           title=f"Latency vs accuracy: {title_of(rows)}")
    ax.grid(True, alpha=0.3)
    return fig


def write_pareto(rows: Iterable[ResultRow], path: Path) -> Path:
    """Render pareto.png and write it atomically."""
    buffer = io.BytesIO()
    pareto_figure(rows).savefig(buffer, format="png")
    return atomic_write_bytes(Path(path), buffer.getvalue())
