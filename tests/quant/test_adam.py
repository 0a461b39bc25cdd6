"""QAT's Adam against torch.optim.Adam: the same parameters to the last bit."""

import math

import pytest

from bench.quant.adam import Adam

torch = pytest.importorskip("torch")


def test_adam_takes_torch_optims_steps_to_the_last_bit():
    torch.manual_seed(0)
    shapes = [(8, 3, 3, 3), (8,), (1,), (4, 8, 1, 1)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    reference = torch.optim.Adam(theirs, lr=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        reference, lambda step: 0.5 * (1 + math.cos(math.pi * step / 12)))
    mine = Adam(ours)
    for step in range(12):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours[2].grad = None if step == 3 else ours[2].grad  # a parameter without a gradient
        theirs[2].grad = None if step == 3 else theirs[2].grad
        mine.step(5e-4 * 0.5 * (1 + math.cos(math.pi * step / 12)))
        reference.step()
        schedule.step()
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), step
    mine.zero_grad()
    assert all(p.grad is None for p in ours)
