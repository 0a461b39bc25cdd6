"""Fake quantization: values and gradients against the references and torch's own kernels."""

import numpy as np
import pytest

from bench.quant.fake_quant import (
    fake_quant,
    fake_quant_weight,
    fast_fake_quant,
    fast_fake_quant_weight,
    open_range,
    quantize_dequantize,
)

torch = pytest.importorskip("torch")


def test_fake_quant_rounds_and_clamps_with_straight_through_gradient():
    x = torch.tensor([-300.0, -1.26, 0.24, 0.26, 300.0], requires_grad=True)
    y = fake_quant(x, torch.tensor(0.5))
    assert y.tolist() == [-64.0, -1.5, 0.0, 0.5, 63.5]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_fast_fake_quant_matches_the_reference_in_values_and_gradients():
    torch.manual_seed(0)
    x = (torch.randn(2, 3, 5, 5) * 4).requires_grad_()
    log_scale = torch.tensor(-1.5, requires_grad=True)
    ref = fake_quant(x, log_scale.exp())
    (ref * torch.linspace(-1, 1, ref.numel()).view_as(ref)).sum().backward()
    grads = x.grad.clone(), log_scale.grad.clone()
    x.grad, log_scale.grad = None, None
    fused = fast_fake_quant(x, log_scale.exp().reshape(1), learn=True)
    (fused * torch.linspace(-1, 1, fused.numel()).view_as(fused)).sum().backward()
    # The reference's gradient is g * s / s: equal up to one float rounding.
    assert torch.equal(fused, ref) and torch.allclose(x.grad, grads[0], rtol=0, atol=1e-6)
    assert torch.allclose(log_scale.grad, grads[1], rtol=1e-4)

    w = torch.randn(6, 3, 3, 3, requires_grad=True)
    ref_w = fake_quant_weight(w, 0)
    ref_w.sum().backward()
    grad_w, w.grad = w.grad.clone(), None
    fused_w = fast_fake_quant_weight(w, 0)
    fused_w.sum().backward()
    assert torch.allclose(fused_w, ref_w, atol=1e-7) and torch.equal(w.grad, grad_w)


def test_fast_fake_quant_equals_torch_kernels_on_channels_last_tensors():
    # torch's own fake-quant kernels are the reference for the hand-written backward:
    # values bit for bit, the straight-through mask exactly, LSQ's scale gradient closely
    torch.manual_seed(1)
    x = (torch.randn(2, 16, 9, 9) * 3).to(memory_format=torch.channels_last)
    x[0, 0, 0, :4] = torch.tensor([127.5, -128.5, 126.5, 0.25]) * 0.02  # ties at the ends
    x.requires_grad_()
    weights = torch.randn_like(x)
    got = {}
    for kind in ("torch", "ours"):
        scale = torch.tensor([0.02], requires_grad=True)
        x.grad = None
        if kind == "torch":
            y = torch._fake_quantize_learnable_per_tensor_affine(
                x, scale, torch.zeros(1), -128, 127, 1.0)
        else:
            y = fast_fake_quant(x, scale, -128, 127, learn=True)
        (y * weights).sum().backward()
        got[kind] = (y.detach(), x.grad.clone(), scale.grad.clone())
    assert torch.equal(got["ours"][0], got["torch"][0])
    assert torch.equal(got["ours"][1], got["torch"][1])
    assert torch.allclose(got["ours"][2], got["torch"][2], rtol=1e-4)
    assert got["ours"][0].is_contiguous(memory_format=torch.channels_last)

    frozen = fast_fake_quant(x.detach(), torch.tensor([0.02]), -128, 127)
    zero = torch.zeros(1, dtype=torch.int32)
    assert torch.equal(frozen, torch.fake_quantize_per_tensor_affine(
        x.detach(), torch.tensor([0.02]), zero, -128, 127))

    w = torch.randn(6, 3, 3, 3)
    amax = w.abs().amax(dim=(1, 2, 3))
    assert torch.equal(fast_fake_quant_weight(w, 0), torch.fake_quantize_per_channel_affine(
        w, amax / 127, torch.zeros(6, dtype=torch.int32), 0, -128, 127))


def test_an_all_zero_weight_channel_stays_zero_not_nan():
    # a pruned channel: its scale is the writer's 1/127, not a denormal whose reciprocal
    # is infinite (0 * inf = NaN)
    w = torch.randn(4, 3, 3, 3)
    w[2] = 0.0
    w.requires_grad_()
    out = fast_fake_quant_weight(w, 0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.equal(out[2], torch.zeros(3, 3, 3))
    assert torch.isfinite(w.grad).all()


@pytest.mark.parametrize("qmin, qmax", [(-128, 127), (0, 255)])
def test_open_range_is_exactly_where_the_quantize_kernel_stays_in_range(qmin, qmax):
    # every float within 40 ulps of both ends, for awkward scales: in range by the
    # thresholds exactly when x * (1/s) rounds (half to even) into [qmin, qmax]
    rng = np.random.default_rng(3)
    for scale in [*rng.uniform(1e-4, 2.0, 30).astype(np.float32), np.float32(0.5),
                  np.float32(1 / 255)]:
        scale = np.float32(scale)
        lo, hi = open_range(float(scale), qmin, qmax)
        inv = np.float32(1) / scale
        for end in ((qmin - 0.5) * scale, (qmax + 0.5) * scale):
            step = np.spacing(np.float32(end))
            x = (np.float32(end) + np.arange(-40, 41, dtype=np.float32) * step).astype(np.float32)
            levels = np.rint(x * inv)
            assert np.array_equal((x > lo) & (x < hi), (levels >= qmin) & (levels <= qmax))


@pytest.mark.parametrize("qmin, qmax", [(-128, 127), (0, 255)])
@pytest.mark.parametrize("learn", [False, True])
def test_fused_path_equals_torch_kernels_at_every_boundary_float(qmin, qmax, learn):
    # torch's fake-quant kernels are the reference: values bit for bit and the
    # straight-through mask exactly, on floats crowded round both ends of the range and
    # round the ties inside it, channels-last
    scale = 0.0173
    s32 = float(np.float32(scale))
    ends = np.array([(qmin - 0.5) * s32, (qmax + 0.5) * s32, (qmin + 3.5) * s32, 0.0],
                    dtype=np.float32)
    near = ends[:, None] + np.arange(-60, 60)[None, :] * np.spacing(ends)[:, None]
    noise = np.random.default_rng(0).normal(0, 2, 4 * 8 * 5 * 5 - near.size)
    x = torch.from_numpy(np.concatenate([near.ravel(), noise]).astype(np.float32))
    x = x.reshape(4, 8, 5, 5)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    weights = torch.randn_like(x)
    got = {}
    for kind in ("torch", "ours"):
        s = torch.tensor([s32], requires_grad=learn)
        x.grad = None
        if kind == "torch" and learn:
            y = torch._fake_quantize_learnable_per_tensor_affine(x, s, torch.zeros(1), qmin,
                                                                 qmax, 1.0)
        elif kind == "torch":
            y = torch.fake_quantize_per_tensor_affine(x, s, torch.zeros(1, dtype=torch.int32),
                                                      qmin, qmax)
        else:
            y = fast_fake_quant(x, s, qmin, qmax, learn=learn)
        (y * weights).sum().backward()
        got[kind] = (y.detach(), x.grad.clone(), s.grad.clone() if learn else None)
    assert torch.equal(got["ours"][0], got["torch"][0])
    assert torch.equal(got["ours"][1], got["torch"][1])
    assert 0 < int((got["ours"][1] == 0).sum()) < x.numel()  # some clamped, some not
    if learn:
        assert torch.allclose(got["ours"][2], got["torch"][2], rtol=1e-4)
    assert got["ours"][0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("qmin, qmax", [(-128, 127), (0, 255)])
def test_both_quantize_paths_give_the_same_floats(qmin, qmax):
    # the element-wise path is what a torch without quantized tensors runs
    x = (torch.randn(2, 8, 7, 7) * 3).contiguous(memory_format=torch.channels_last)
    for scale in (0.02, 1 / 255, 0.3):
        scale = float(np.float32(scale))
        fused = quantize_dequantize(x, scale, qmin, qmax, fused=True)
        plain = quantize_dequantize(x, scale, qmin, qmax, fused=False)
        assert torch.equal(fused, plain)


def test_a_strided_view_takes_the_masked_path_with_the_same_result():
    base = torch.randn(6, 5, 4) * 3
    view = base.transpose(0, 2).requires_grad_()  # neither contiguous nor channels-last
    dense = view.detach().contiguous().requires_grad_()
    scale = torch.tensor([0.02])
    out_view, out_dense = fast_fake_quant(view, scale), fast_fake_quant(dense, scale)
    out_view.sum().backward()
    out_dense.sum().backward()
    assert torch.equal(out_view, out_dense) and torch.equal(view.grad, dense.grad)


def test_the_gradient_is_laid_out_as_the_input_whatever_the_incoming_gradients_layout():
    # a contiguous gradient into a channels-last activation (a Concat's backward gives
    # one): the conv backward upstream then sees the same layout as with a stored mask.
    # Read by a hook on a non-leaf input: a leaf's .grad is re-laid out by autograd.
    x = (torch.randn(2, 8, 5, 5) * 3).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    hidden = x * 1.0
    seen = []
    hidden.register_hook(seen.append)
    y = fast_fake_quant(hidden, torch.tensor([0.02]))
    y.backward(torch.randn(2, 8, 5, 5))
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
