"""Which quantization groups cost the accuracy, and the fewest to leave float for a target.

ranking: for each group (bench.quant.placement.quant_groups), the mAP with only that group
left float (everything else INT8) and, optionally, with only that group quantized
(everything else float), each through the caller's ``evaluate(keep_float_groups) -> mAP``
-- e.g. build the Q/DQ model with KeepFloat(nodes=keep_float_nodes(groups)) and measure
its mAP on an evaluation subset. Groups rank by the mAP gained when left float, then by
the mAP lost when quantized alone (as NVIDIA's yolov7_qat sensitive-layer analysis and
NNCF's accuracy-aware quantization rank layers).

search: greedy, as NNCF's accuracy-aware quantization reverts layers: leave the most
sensitive groups float one at a time until the target mAP is met, then try to quantize
each kept group again (most recently added first) and keep it quantized if the target
still holds, so the set left float is as small as the greedy order allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bench.errors import ConfigError
from bench.quant.placement import QuantGroup

Evaluate = Callable[[Sequence[QuantGroup]], float]


@dataclass(frozen=True)
class Sensitivity:
    """One group's effect. gain_float: mAP(only this group float) - mAP(all INT8);
    drop_alone: mAP(all float) - mAP(only this group INT8), None when not measured."""

    rank: int
    group: QuantGroup
    map_float: float
    gain_float: float
    map_alone: float | None
    drop_alone: float | None


@dataclass(frozen=True)
class Ranking:
    """All-INT8 and all-float reference mAPs and the groups, most sensitive first."""

    map_int8: float
    map_float: float | None
    rows: tuple[Sensitivity, ...]
    evaluations: int


@dataclass(frozen=True)
class KeepFloatPlan:
    """The groups left float (in the order they were added), the mAP they reach, whether
    it meets the target, and every (groups kept float, mAP) evaluation made."""

    groups: tuple[QuantGroup, ...]
    map: float
    target: float
    met: bool
    trials: tuple[tuple[tuple[str, ...], float], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)


def _tick(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def rank_sensitivity(
    groups: Sequence[QuantGroup],
    evaluate: Evaluate,
    *,
    alone: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Ranking:
    """Evaluate 1 + len(groups) models (2 + 2 len(groups) with `alone`) and rank them.

    evaluate(groups) gets the groups to leave float; with every group float there is
    nothing left to quantize (plan_quantization raises), so it should return the FP32 mAP.

    progress: called with a short label before each evaluation (for a progress bar).
    """
    groups = list(groups)
    if not groups:
        raise ConfigError("rank_sensitivity: got no quantization groups; expected at least one")
    _tick(progress, "all int8")
    base = float(evaluate([]))
    full = None
    if alone:
        _tick(progress, "all float")
        full = float(evaluate(groups))
    rows = []
    for group in groups:
        _tick(progress, f"float: {group.name}")
        kept = float(evaluate([group]))
        solo = None
        if alone:
            _tick(progress, f"int8 alone: {group.name}")
            solo = float(evaluate([g for g in groups if g is not group]))
        rows.append((group, kept, solo))
    ordered = sorted(rows, key=lambda r: (-(r[1] - base),
                                          -(full - r[2]) if full is not None else 0.0))
    ranked = tuple(Sensitivity(i + 1, g, kept, kept - base, solo,
                               None if solo is None else full - solo)
                   for i, (g, kept, solo) in enumerate(ordered))
    return Ranking(base, full, ranked, 1 + len(groups) + (1 + len(groups) if alone else 0))


def search_keep_float(
    ranking: Ranking | Iterable[Sensitivity | QuantGroup],
    evaluate: Evaluate,
    target: float,
    *,
    max_groups: int | None = None,
    prune: bool = True,
    progress: Callable[[str], None] | None = None,
) -> KeepFloatPlan:
    """The fewest groups, most sensitive first, to leave float so that mAP >= target.

    If even `max_groups` (default: all) groups left float miss the target, the plan holds
    them all with met=False.
    """
    order = [r.group if isinstance(r, Sensitivity) else r
             for r in (ranking.rows if isinstance(ranking, Ranking) else ranking)]
    limit = len(order) if max_groups is None else min(max_groups, len(order))
    trials: list[tuple[tuple[str, ...], float]] = []

    def trial(groups: list[QuantGroup]) -> float:
        _tick(progress, f"{len(groups)} float")
        value = float(evaluate(groups))
        trials.append((tuple(g.name for g in groups), value))
        return value

    kept: list[QuantGroup] = []
    score = trial(kept)
    while score < target and len(kept) < limit:
        kept.append(order[len(kept)])
        score = trial(kept)
    if score >= target and prune:
        for group in list(reversed(kept[:-1])):  # the last one added was needed
            fewer = [g for g in kept if g is not group]
            value = trial(fewer)
            if value >= target:
                kept, score = fewer, value
    return KeepFloatPlan(tuple(kept), score, target, score >= target, tuple(trials))


def ranking_rows(ranking: Ranking) -> list[dict[str, object]]:
    """The ranking as plain rows (for a CSV or a table)."""
    return [{"rank": r.rank, "group": r.group.name, "kind": r.group.kind,
             "map_float": r.map_float, "gain_float": r.gain_float, "map_alone": r.map_alone,
             "drop_alone": r.drop_alone} for r in ranking.rows]


def plot_ranking(ranking: Ranking, path, top: int = 20):
    """Horizontal bars of the `top` groups' mAP gain when left float."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ranking.rows[:top]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    ax.barh([r.group.name for r in rows][::-1], [r.gain_float for r in rows][::-1])
    ax.set_xlabel(f"mAP gained when left float (all INT8: {ranking.map_int8:.4f})")
    ax.set_title("Quantization sensitivity")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
