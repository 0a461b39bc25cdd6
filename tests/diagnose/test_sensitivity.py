"""Sensitivity ranking and the keep-float search on the mini YOLO-like graph, each
candidate built with the real placement and writer and scored through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from diag_helpers import true_amax

from bench.diagnose.sensitivity import (
    KeepFloatPlan,
    plot_ranking,
    rank_sensitivity,
    ranking_rows,
    search_keep_float,
)
from bench.errors import ConfigError, ModelError
from bench.quant.placement import KeepFloat, keep_float_nodes, plan_quantization, quant_groups
from bench.quant.qdq import write_qdq

SABOTAGED = "/model.10/conv/Conv"  # its input's amax is cut to 1/20: it clips hard


def _run(model, images):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


@pytest.fixture(scope="module")
def setup(model, plan, images):
    amax = true_amax(model, plan.activation_tensors, images)
    sabotaged = next(op.activation for op in plan.ops if op.name == SABOTAGED)
    amax[sabotaged] /= 20
    reference = _run(model, images)
    calls = []

    def evaluate(groups) -> float:
        calls.append(tuple(g.name for g in groups))
        keep = KeepFloat(nodes=keep_float_nodes(groups))
        try:
            candidate = write_qdq(model, plan_quantization(model, keep_float=keep), amax)
        except ModelError:  # every conv left float: the FP32 model itself
            candidate = model
        out = _run(candidate, images)
        return 1.0 - float(np.linalg.norm(out - reference) / np.linalg.norm(reference))

    return evaluate, calls


def test_groups_cover_every_quantized_conv_and_shared_group(model, plan):
    groups = quant_groups(model, plan)
    convs = [g for g in groups if g.kind == "conv"]
    shared = [g for g in groups if g.kind == "shared"]
    assert [g.name for g in convs] == list(plan.quantized_nodes)
    assert [g.tensors for g in shared] == list(plan.shared_groups)
    for g in shared:  # leaving a shared group float removes every one of its Q/DQ
        left = plan_quantization(model, keep_float=KeepFloat(nodes=g.nodes))
        assert not set(g.tensors) & set(left.tensors_for("tensorrt")), g.name
    assert keep_float_nodes(shared[:2]) == tuple(dict.fromkeys(shared[0].nodes + shared[1].nodes))


def test_ranking_puts_the_sabotaged_conv_first(model, plan, setup, tmp_path):
    evaluate, calls = setup
    groups = quant_groups(model, plan)
    calls.clear()
    labels = []
    ranking = rank_sensitivity(groups, evaluate, progress=labels.append)
    assert ranking.evaluations == len(calls) == len(labels) == 2 + 2 * len(groups)
    first = ranking.rows[0]
    assert first.group.name == SABOTAGED and first.rank == 1
    assert first.gain_float > 0.02 and first.gain_float == pytest.approx(
        first.map_float - ranking.map_int8)
    assert [r.gain_float for r in ranking.rows] == sorted(
        (r.gain_float for r in ranking.rows), reverse=True)
    # quantized alone, the sabotaged conv costs the most too
    assert max(ranking.rows, key=lambda r: r.drop_alone).group.name == SABOTAGED
    assert ranking.map_float == pytest.approx(1.0, abs=1e-6)  # nothing quantized
    rows = ranking_rows(ranking)
    assert rows[0]["group"] == SABOTAGED and set(rows[0]) >= {"gain_float", "drop_alone"}
    assert plot_ranking(ranking, tmp_path / "s.png").stat().st_size > 5_000


def test_search_keeps_only_what_the_target_needs(model, plan, setup):
    evaluate, _ = setup
    groups = quant_groups(model, plan)
    ranking = rank_sensitivity(groups, evaluate, alone=False)
    base = ranking.map_int8
    fixed = ranking.rows[0].map_float
    result = search_keep_float(ranking, evaluate, target=(base + fixed) / 2)
    assert isinstance(result, KeepFloatPlan) and result.met
    assert result.names == (SABOTAGED,) and result.map == pytest.approx(fixed)
    assert result.trials[0] == ((), pytest.approx(base))
    # a target already met needs nothing float; an unreachable one keeps all it may
    assert search_keep_float(ranking, evaluate, target=base - 1).groups == ()
    stuck = search_keep_float(ranking, evaluate, target=2.0, max_groups=3)
    assert not stuck.met and len(stuck.groups) == 3


def test_search_prunes_groups_a_later_one_made_unneeded(model, plan, setup):
    evaluate, _ = setup
    groups = quant_groups(model, plan)
    sabotaged = next(g for g in groups if g.name == SABOTAGED)
    harmless = [g for g in groups if g.kind == "conv" and g is not sabotaged][:2]
    target = evaluate([sabotaged]) - 0.005  # well above all-INT8 (0.966 here)
    result = search_keep_float([*harmless, sabotaged], evaluate, target)
    assert result.met and result.names == (SABOTAGED,)


def test_no_groups_is_a_config_error(setup):
    with pytest.raises(ConfigError, match="no quantization groups"):
        rank_sensitivity([], setup[0])
