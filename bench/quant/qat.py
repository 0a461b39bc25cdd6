"""int8-qat: label-free quantization-aware fine-tuning of any YOLO ONNX.

The FP32 ONNX is interpreted in PyTorch (bench.models.onnx_torch), fake quantization is
inserted at exactly the tensors the PTQ plan quantizes (activations per tensor, weights
per output channel), and the weights (optionally the activation scales too) are tuned by
distillation: per-layer MSE between the fake-quantized student and the FP32 teacher on
calibration images, as NVIDIA's yolov7_qat supervises, with Adam and a cosine schedule.
The tuned weights and scales are then written by the same Q/DQ writer as the PTQ
variants, so int8-qat has the same placement and kept-float set as int8-max.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench.errors import ModelError

QMIN, QMAX = -128, 127
GATE_SCALE = 1.0 / 255.0
DEFAULT_BATCH = 8
MIN_DEFAULT_STEPS = 200


@dataclass(frozen=True)
class QatSettings:
    """The fine-tuning budget. steps wins over epochs; minutes stops early."""

    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    images: int = 512
    lr: float = 5e-4
    learn_scales: bool = True
    batch: int = DEFAULT_BATCH
    seed: int = 0

    def total_steps(self, n_images: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, math.ceil(n_images / self.batch))
        if self.epochs is not None:
            return max(1, round(self.epochs * per_epoch))
        return max(MIN_DEFAULT_STEPS, per_epoch)


@dataclass(frozen=True)
class QatResult:
    """The tuned FP32 model (weights), the activation amax, and how the training went."""

    model: onnx.ModelProto
    amax: dict[str, float]
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    stopped_by_time: bool


def run_qat(model: onnx.ModelProto, plan: Any, amax: Mapping[str, float],
            images: np.ndarray, settings: QatSettings, *, profile: str,
            progress: bool = True) -> QatResult:
    """Fine-tune `model` under the fake quantization `plan` describes; see module doc."""
    import torch

    from bench.models.onnx_torch import OnnxModule, state_to_onnx

    torch.manual_seed(settings.seed)
    student, teacher = OnnxModule(model), OnnxModule(model)  # unsupported op -> ModelError
    teacher.requires_grad_(False)
    quant = FakeQuantizer(plan, amax, profile, learn_scales=settings.learn_scales)
    student.set_taps(quant.tapped_names)
    watched = quant.supervised_tensors(model)
    trainable = [p for p in student.parameters() if p.requires_grad] + quant.parameters()
    optimizer = torch.optim.Adam(trainable, lr=settings.lr)
    total = settings.total_steps(len(images))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, total))
    losses, start, stopped = [], time.perf_counter(), False
    for step, batch in _progress(_batches(images, settings, total), total, progress):
        loss = _distillation_loss(student, teacher, quant, _as_float(batch), watched)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if settings.minutes and time.perf_counter() - start > 60 * settings.minutes:
            stopped = step + 1 < total
            break
    tuned = state_to_onnx(student, model)
    return QatResult(tuned, quant.amax(), len(losses), time.perf_counter() - start,
                     float(np.mean(losses[:5])), float(np.mean(losses[-5:])), stopped)


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first tenth (Adam's first steps on a converged model are
    otherwise its largest), then cosine decay to zero."""
    warmup = max(1, total // 10)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total) / max(1, total - warmup)))


class FakeQuantizer:
    """Fake quantization at the plan's tensors, as one tap function.

    Activations: per tensor, symmetric, scale = amax / 127 (shared groups share one
    scale). Weights: per output channel, scale from the current max |w| (what the Q/DQ
    writer will compute from the tuned weights). Rounding uses a straight-through
    estimator, so gradients reach the weights and, when learned, the scales (LSQ-style).
    """

    def __init__(self, plan: Any, amax: Mapping[str, float], profile: str,
                 learn_scales: bool = False):
        import torch

        from bench.quant.qdq import activation_scales

        scales = activation_scales(plan, amax, profile)
        self._groups = _scale_groups(plan, list(scales))
        self._log_scales = {
            leader: torch.nn.Parameter(torch.tensor(math.log(scales[leader])),
                                       requires_grad=learn_scales)
            for leader in set(self._groups.values())}
        self._weights = {op.weight: op.weight_axis for op in plan.ops}
        # SiLU gates (cpu profile): a sigmoid in [0, 1] on a fixed u8 grid of 1/255.
        self._gates = {g.tensor for g in plan.gates} if profile == "cpu" else set()
        self._plan = plan

    @property
    def tapped_names(self) -> tuple[str, ...]:
        return (*self._groups, *self._weights, *self._gates)

    def parameters(self) -> list:
        return [p for p in self._log_scales.values() if p.requires_grad]

    def supervised_tensors(self, model: onnx.ModelProto) -> tuple[str, ...]:
        """Per-layer supervision: every quantized op's output and the head convs' outputs
        (raw logits, before the decode mixes pixels and probabilities)."""
        from bench.quant.placement import node_key

        heads = set(self._plan.head_convs)
        head_outputs = tuple(n.output[0] for n in model.graph.node
                             if n.name in heads or node_key(n) in heads)
        return tuple(dict.fromkeys((*(op.output for op in self._plan.ops), *head_outputs)))

    def __call__(self, name: str, tensor: Any) -> Any:
        if name in self._weights:
            return fake_quant_weight(tensor, self._weights[name])
        if name in self._gates:
            return fake_quant(tensor, GATE_SCALE, 0, 255)
        return fake_quant(tensor, self._log_scales[self._groups[name]].exp())

    def amax(self) -> dict[str, float]:
        return {name: float(self._log_scales[leader].detach().exp()) * QMAX
                for name, leader in self._groups.items()}


def fake_quant(x: Any, scale: Any, qmin: int = QMIN, qmax: int = QMAX) -> Any:
    """clamp(round(x / s)) * s with a straight-through round."""
    scaled = x / scale
    rounded = scaled + (scaled.round() - scaled).detach()
    return rounded.clamp(qmin, qmax) * scale


def fake_quant_weight(weight: Any, axis: int) -> Any:
    dims = [d for d in range(weight.dim()) if d != axis]
    amax = weight.detach().abs().amax(dim=dims, keepdim=True)
    scale = amax.clamp_min(float(np.finfo(np.float32).tiny)) / QMAX
    return fake_quant(weight, scale)


def _scale_groups(plan: Any, tensors: list[str]) -> dict[str, str]:
    """tensor -> the tensor whose scale it uses (the first of its shared group)."""
    leader = {t: t for t in tensors}
    for group in plan.shared_groups:
        members = [t for t in group if t in leader]
        for t in members:
            leader[t] = members[0]
    return leader


def _distillation_loss(student: Any, teacher: Any, quant: FakeQuantizer, batch: Any,
                       watched: tuple[str, ...]) -> Any:
    import torch

    with torch.no_grad():
        t_mid = teacher.forward_collect(batch, watched)[1]
    s_mid = student.forward_collect(batch, watched, tap=quant)[1]
    terms = [_normalised_mse(s_mid[n], t_mid[n]) for n in watched]
    return torch.stack(terms).mean()


def _as_float(batch: np.ndarray) -> Any:
    import torch

    if batch.dtype == np.uint8:
        return torch.from_numpy(batch).float().div_(255.0)
    return torch.from_numpy(batch)


def _normalised_mse(student: Any, teacher: Any) -> Any:
    # Each layer weighs the same whatever its magnitude: MSE relative to the teacher's power.
    return ((student - teacher) ** 2).mean() / (teacher.pow(2).mean() + 1e-8)


def _batches(images: np.ndarray, settings: QatSettings, total: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(settings.seed)
    produced = 0
    while produced < total:
        order = rng.permutation(len(images))
        for start in range(0, len(order), settings.batch):
            if produced == total:
                return
            yield images[order[start:start + settings.batch]]
            produced += 1


def _progress(batches: Iterator[np.ndarray], total: int, enabled: bool):
    from bench.progress import bar as progress_bar

    return enumerate(progress_bar(batches, total=total, desc="int8-qat", unit="step",
                                  enabled=enabled))


def build_qat_variant(spec: Any, ctx: Any) -> Any:
    """The registry's builder: PTQ init, fine-tune, write Q/DQ; cached like every artifact."""
    import torch

    from bench.quant.qdq import write_qdq

    settings = qat_settings(ctx.cfg)
    init = ctx.qat_init_method()
    parts = ctx.key_parts(spec.name, init=init, profile=ctx.cfg.profile, calib=ctx.calib_id,
                          keep_float=list(ctx.cfg.keep_float), torch=torch.__version__,
                          settings=settings.__dict__)

    def build(out: Path) -> dict[str, Any]:
        model, plan = ctx.quant_plan()
        amax = ctx.calibrate(plan, init)
        # Letterboxed images come from uint8 pixels: kept as uint8 they take a quarter of
        # the memory (512 images at 640 px: 629 MB instead of 2.5 GB), exactly.
        images = np.concatenate([np.rint(b * 255).astype(np.uint8)
                                 for b in _limited(ctx.qat_batches(), settings.images)])
        result = run_qat(model, plan, amax, images, settings, profile=ctx.cfg.profile,
                         progress=ctx.cfg.progress)
        onnx.save(write_qdq(result.model, plan, result.amax, profile=ctx.cfg.profile), str(out))
        return {"init": init, "steps": result.steps, "train_s": round(result.seconds, 1),
                "loss_first": result.loss_first, "loss_last": result.loss_last,
                "stopped_by_time": result.stopped_by_time, "images": len(images),
                "lr": settings.lr, "learn_scales": settings.learn_scales}

    return ctx.cache.get_or_build("qat", parts, ".onnx", build)


def qat_settings(cfg: Any) -> QatSettings:
    return QatSettings(steps=cfg.qat_iters, epochs=cfg.qat_epochs, minutes=cfg.qat_minutes,
                       images=cfg.qat_images, lr=cfg.qat_lr, learn_scales=cfg.qat_scales)


def _limited(batches: Iterator[np.ndarray], count: int) -> Iterator[np.ndarray]:
    seen = 0
    for batch in batches:
        if seen >= count:
            return
        yield batch[: count - seen]
        seen += len(batch)
    if seen == 0:
        raise ModelError("int8-qat: no calibration images to fine-tune on")
