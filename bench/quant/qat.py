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
from bench.quant.fake_quant import QMAX, QMIN, fast_fake_quant, fast_fake_quant_weight

GATE_SCALE = 1.0 / 255.0
DEFAULT_BATCH = 8
# The default budget: one pass over the QAT images, at least this many steps. 100, not the
# earlier 200: on the default (percentile start, 0.6430), 60, 100 and 200 steps ended at
# mAP 0.6434, 0.6428 and 0.6414 (held-out error 0.0029, 0.0027, 0.0025), and after a
# change of the loss's summation order alone (TRAINER_VERSION 3) at 0.6414, 0.6419 and
# 0.6426 (0.0029, 0.0026, 0.0026; scripts/bench_qat_budget.py, 2026-12-02): the order
# flips with float rounding, every difference is inside 0.002 where a ΔmAP's CI here is
# ±0.004, and the second hundred steps cost 35-40 s of a cold run.
MIN_DEFAULT_STEPS = 100
# Bumped when training's arithmetic changes, so that the same inputs no longer find an
# artifact trained the old way. 2: the hand-written fake-quant backward. 3: the teacher's
# cache channels-last (the loss sums in another order).
TRAINER_VERSION = 3
# The teacher's tensors are kept for every image up to this size (float16), else recomputed.
TEACHER_CACHE_BYTES = 2 << 30


@dataclass(frozen=True)
class QatSettings:
    """The fine-tuning budget. steps wins over epochs; minutes stops early.

    batch is the effective batch of one optimizer step: a model whose batch dimension is
    fixed at a smaller size accumulates the gradients of several such batches per step.
    holdout: the share of the images kept out of training for the label-free check.
    """

    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    images: int = 512
    lr: float = 5e-4
    learn_scales: bool = True
    batch: int = DEFAULT_BATCH
    seed: int = 0
    holdout: float = 0.125

    def total_steps(self, n_images: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = max(1, math.ceil(n_images / self.batch))
        if self.epochs is not None:
            return max(1, round(self.epochs * per_epoch))
        return max(MIN_DEFAULT_STEPS, per_epoch)


@dataclass(frozen=True)
class QatResult:
    """The kept FP32 model (weights), its activation amax, and how the training went.

    kept: "trained", or "initial" when the held-out check found the starting calibration
    closer to the FP32 teacher (model and amax are then the ones given to run_qat).
    held: the indices of the held-out images (for the build's engine check, see
    bench.quant.qat_check, when run_qat's own head check is off).
    """

    model: onnx.ModelProto
    amax: dict[str, float]
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    stopped_by_time: bool
    kept: str = "trained"
    holdout_initial: float | None = None
    holdout_trained: float | None = None
    images_train: int = 0
    images_holdout: int = 0
    micro_batch: int = DEFAULT_BATCH
    accumulate: int = 1
    teacher: str = "cached"
    held: tuple[int, ...] = ()


def run_qat(model: onnx.ModelProto, plan: Any, amax: Mapping[str, float],
            images: np.ndarray, settings: QatSettings, *, profile: str,
            progress: bool = True, fixed_batch: int | None = None,
            head_check: bool = True) -> QatResult:
    """Fine-tune `model` under the fake quantization `plan` describes; see module doc.

    images: letterboxed [N, 3, H, W] (uint8 pixels or floats in [0, 1]). fixed_batch: the
    model's static batch dimension; every forward then runs on exactly that many images.
    head_check: compare the head outputs with the teacher's on the held-out images before
    and after training and return the better weights; off, the trained weights come back
    (kept "trained") for the caller to check (the build checks them on the engine).
    """
    import torch

    from bench.models.onnx_torch import OnnxModule, state_to_onnx, trunk
    from bench.quant.adam import Adam

    torch.manual_seed(settings.seed)
    quant = FakeQuantizer(plan, amax, profile, learn_scales=settings.learn_scales)
    watched = quant.supervised_tensors(model)
    heads = quant.head_tensors(model)
    # Only what the supervision reads is interpreted: the decode after the head convs,
    # and an NMS op inside the model, never run (their ops stay float in the Q/DQ model).
    body = trunk(model, (*watched, *heads))
    student = OnnxModule(body).to_channels_last()  # unsupported op -> ModelError
    student.set_taps(quant.tapped_names)
    micro = fixed_batch or settings.batch
    accumulate = max(1, math.ceil(settings.batch / micro))
    train, held = _split(len(images), settings)
    targets = Teacher(body, images, (*watched, *heads), micro)
    check = _holdout_error if head_check else _no_check
    check_initial = check(student, quant, images, held, targets, heads, micro)
    trainable = [p for p in student.parameters() if p.requires_grad] + quant.parameters()
    optimizer = Adam(trainable)
    total = settings.total_steps(len(train))
    losses, start, stopped = [], time.perf_counter(), False
    chunks = _micro_batches(train, micro, settings.seed)
    for step in _progress(total, progress):
        optimizer.zero_grad()
        loss_sum = 0.0
        for _ in range(accumulate):
            index = next(chunks)
            loss = _distillation_loss(student, quant, _as_float(images[index]),
                                      targets.of(index), watched) / accumulate
            loss.backward()
            loss_sum += float(loss.detach())
        optimizer.step(settings.lr * _lr_factor(step, total))
        losses.append(loss_sum)
        if settings.minutes and time.perf_counter() - start > 60 * settings.minutes:
            stopped = step + 1 < total
            break
    seconds = time.perf_counter() - start
    check_trained = check(student, quant, images, held, targets, heads, micro)
    keep_trained = check_initial is None or check_trained <= check_initial
    tuned, tuned_amax = ((state_to_onnx(student, model), quant.amax()) if keep_trained
                         else (model, dict(amax)))
    return QatResult(tuned, tuned_amax, len(losses), seconds,
                     float(np.mean(losses[:5])), float(np.mean(losses[-5:])), stopped,
                     kept="trained" if keep_trained else "initial",
                     holdout_initial=check_initial, holdout_trained=check_trained,
                     images_train=len(train), images_holdout=len(held), micro_batch=micro,
                     accumulate=accumulate, teacher=targets.mode,
                     held=tuple(int(i) for i in held))


def _split(n_images: int, settings: QatSettings) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out): a seeded draw of the held-out share, at least one image
    each side when there are two or more images (none held out from a single image)."""
    order = np.random.default_rng(settings.seed + 1).permutation(n_images)
    held = min(n_images - 1, max(1, round(settings.holdout * n_images))) \
        if settings.holdout > 0 else 0
    return np.sort(order[held:]), np.sort(order[:held])


def _micro_batches(indices: np.ndarray, size: int, seed: int) -> Iterator[np.ndarray]:
    """Endless batches of exactly `size` indices: shuffled passes laid end to end."""
    rng = np.random.default_rng(seed)
    pending = np.empty(0, dtype=np.int64)
    while True:
        while len(pending) < size:
            pending = np.concatenate([pending, rng.permutation(indices)])
        yield np.sort(pending[:size])
        pending = pending[size:]


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
        return tuple(dict.fromkeys((*(op.output for op in self._plan.ops),
                                    *self.head_tensors(model))))

    def head_tensors(self, model: onnx.ModelProto) -> tuple[str, ...]:
        """The head convs' outputs: what the held-out check compares with the teacher."""
        from bench.quant.placement import node_key

        heads = set(self._plan.head_convs)
        return tuple(n.output[0] for n in model.graph.node
                     if n.name in heads or node_key(n) in heads)

    def __call__(self, name: str, tensor: Any) -> Any:
        if name in self._weights:
            return fast_fake_quant_weight(tensor, self._weights[name])
        if name in self._gates:
            return fast_fake_quant(tensor, self._gate_scale(tensor), 0, 255)
        log_scale = self._log_scales[self._groups[name]]
        return fast_fake_quant(tensor, log_scale.exp().reshape(1), QMIN, QMAX,
                                learn=log_scale.requires_grad)

    def _gate_scale(self, tensor: Any) -> Any:
        import torch

        return torch.full((1,), GATE_SCALE, dtype=tensor.dtype, device=tensor.device)

    def amax(self) -> dict[str, float]:
        return {name: float(self._log_scales[leader].detach().exp()) * QMAX
                for name, leader in self._groups.items()}


def _scale_groups(plan: Any, tensors: list[str]) -> dict[str, str]:
    """tensor -> the tensor whose scale it uses (the first of its shared group)."""
    leader = {t: t for t in tensors}
    for group in plan.shared_groups:
        members = [t for t in group if t in leader]
        for t in members:
            leader[t] = members[0]
    return leader


class Teacher:
    """The frozen FP32 model's tensors for every image, by image index.

    Computed once per image (one forward for all the named taps) and kept in float16 when
    they fit TEACHER_CACHE_BYTES; otherwise recomputed for every batch.
    """

    def __init__(self, model: onnx.ModelProto, images: np.ndarray, names: tuple[str, ...],
                 batch: int):
        from bench.models.onnx_torch import OnnxModule

        self._module = OnnxModule(model).requires_grad_(False).to_channels_last()
        self._images, self._names, self._batch = images, tuple(dict.fromkeys(names)), batch
        first = self._forward(np.arange(min(batch, len(images))) % len(images))
        per_image = sum(t[0].numel() for t in first.values()) * 2  # float16 bytes
        self.mode = "cached" if per_image * len(images) <= TEACHER_CACHE_BYTES else "per step"
        self._cache = self._fill(first) if self.mode == "cached" else None

    def _forward(self, index: np.ndarray) -> dict[str, Any]:
        import torch

        with torch.no_grad():
            return self._module.forward_collect(_as_float(self._images[index]), self._names)[1]

    def _fill(self, first: dict[str, Any]) -> dict[str, Any]:
        import torch

        n = len(self._images)
        # Kept in the layout the student produces (channels-last 4-D tensors): measured on
        # a 2 M-element tap, filling took 0.086 s instead of 0.132 s and a batch's look-up
        # plus its MSE against the student 4.3 ms instead of 6.6 ms.
        cache = {name: torch.empty((n, *t.shape[1:]), dtype=torch.float16,
                                   memory_format=torch.channels_last if t.dim() == 4
                                   else torch.contiguous_format)
                 for name, t in first.items()}
        for start in range(0, n, self._batch):
            index = np.arange(start, start + self._batch) % n  # a short tail wraps round
            got = first if start == 0 else self._forward(index)
            real = min(self._batch, n - start)
            for name, tensor in got.items():
                cache[name][start:start + real] = tensor[:real]
        return cache

    def of(self, index: np.ndarray) -> dict[str, Any]:
        """The named tensors (float32) of the images at `index`."""
        if self._cache is None:
            return self._forward(index)
        return {name: values[index].float() for name, values in self._cache.items()}


def _distillation_loss(student: Any, quant: FakeQuantizer, batch: Any,
                       targets: Mapping[str, Any], watched: tuple[str, ...]) -> Any:
    return _loss(student.forward_collect(batch, watched, tap=quant)[1], targets, watched)


def _loss(got: Mapping[str, Any], wanted: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    import torch

    return torch.stack([_normalised_mse(got[n], wanted[n]) for n in names]).mean()


def _holdout_error(student: Any, quant: FakeQuantizer, images: np.ndarray, held: np.ndarray,
                   targets: Teacher, heads: tuple[str, ...], batch: int) -> float | None:
    """Label-free check: the head outputs' normalised MSE against the FP32 teacher on the
    held-out images, with the current weights and scales; None without held-out images."""
    import torch

    if len(held) == 0 or not heads:
        return None
    errors = []
    with torch.no_grad():
        for start in range(0, len(held), batch):
            index = held[np.arange(start, start + batch) % len(held)]
            got = student.forward_collect(_as_float(images[index]), heads, tap=quant)[1]
            wanted = targets.of(index)
            errors.append(float(_loss(got, wanted, heads)))
    return float(np.mean(errors))


def _no_check(*_args: Any) -> None:
    return None


def _as_float(batch: np.ndarray) -> Any:
    """A float tensor of the batch, channels-last like the modules' weights."""
    import torch

    if batch.dtype == np.uint8:
        tensor = torch.from_numpy(batch).float().div_(255.0)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(batch))
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def _normalised_mse(student: Any, teacher: Any) -> Any:
    import torch.nn.functional as F

    # Each layer weighs the same whatever its magnitude: MSE relative to the teacher's power.
    # (mse_loss is one fused kernel each way; the written-out form made three passes.)
    return F.mse_loss(student, teacher) / (teacher.square().mean() + 1e-8)


def _progress(total: int, enabled: bool) -> Any:
    from bench.progress import bar as progress_bar

    return progress_bar(range(total), total=total, desc="int8-qat", unit="step",
                        enabled=enabled)


def build_qat_variant(spec: Any, ctx: Any) -> Any:
    """The registry's builder: PTQ init, fine-tune, write Q/DQ; cached like every artifact."""
    from bench.quant.qat_check import CHECK_VERSION, engine_unavailable
    from bench.quant.qdq import write_qdq

    settings = qat_settings(ctx.cfg)
    init = ctx.qat_init_method()
    # torch's version from package metadata: importing torch costs a second on a warm run.
    from bench.quant.qdq import FORMAT_VERSION

    float_nodes, plan_key, plan_meta = _plan_source(ctx)
    parts = ctx.key_parts(spec.name, init=init, profile=ctx.cfg.profile, calib=ctx.calib_id,
                          qat_images=ctx.qat_calib_id, keep_float=list(ctx.cfg.keep_float),
                          torch=_torch_version(), settings=settings.__dict__,
                          fixed_batch=ctx.fixed_batch, qdq_format=FORMAT_VERSION,
                          trainer=TRAINER_VERSION, min_steps=MIN_DEFAULT_STEPS,
                          check=CHECK_VERSION,
                          eval_protocol=[ctx.cfg.conf, ctx.cfg.iou, ctx.cfg.max_det],
                          **plan_key)

    def build(out: Path) -> dict[str, Any]:
        started = time.perf_counter()
        model, plan = ctx.quant_plan(float_nodes)
        amax = ctx.calibrate(plan, init)
        # Letterboxed images come from uint8 pixels: kept as uint8 they take a quarter of
        # the memory (512 images at 640 px: 629 MB instead of 2.5 GB), exactly.
        images = np.concatenate([np.rint(b * 255).astype(np.uint8)
                                 for b in _limited(ctx.qat_batches(), settings.images)])
        # The keep check runs the Q/DQ models on ONNX Runtime; a model it cannot load (a
        # TensorRT plugin inside) is checked by its head outputs in the interpreter instead.
        unavailable = engine_unavailable(model)
        result = run_qat(model, plan, amax, images, settings, profile=ctx.cfg.profile,
                         progress=ctx.cfg.progress, fixed_batch=ctx.fixed_batch,
                         head_check=unavailable is not None)
        qdq = write_qdq(result.model, plan, result.amax, profile=ctx.cfg.profile)
        kept, check = result.kept, _head_check_meta(result, unavailable)
        if unavailable is None:
            kept, qdq, check = _engine_check(ctx, model, plan, amax, qdq,
                                             images[list(result.held)])
        onnx.save(qdq, str(out))
        return {"init": init, **plan_meta, "kept": kept, **check, "steps": result.steps,
                "train_s": round(result.seconds, 1),
                "qat_s": round(time.perf_counter() - started, 1),
                "loss_first": result.loss_first, "loss_last": result.loss_last,
                "stopped_by_time": result.stopped_by_time, **_image_counts(result, settings),
                "batch": result.micro_batch, "accumulate": result.accumulate,
                "teacher": result.teacher, "lr": settings.lr,
                "learn_scales": settings.learn_scales}

    return ctx.cache.get_or_build("qat", parts, ".onnx", build)


def _engine_check(ctx: Any, model: onnx.ModelProto, plan: Any, amax: Mapping[str, float],
                  trained: onnx.ModelProto, held: np.ndarray,
                  ) -> tuple[str, onnx.ModelProto, dict[str, Any]]:
    """(kept, its Q/DQ model, meta): the start's Q/DQ model against the trained one on the
    held-out images, by agreement with the FP32 model's detections (bench.quant.qat_check)."""
    from bench.quant.qat_check import compare
    from bench.quant.qdq import write_qdq

    cfg = ctx.cfg
    initial = write_qdq(model, plan, amax, profile=cfg.profile)
    found = compare(model, {"initial": initial, "trained": trained}, held,
                    fixed_batch=ctx.fixed_batch, conf=cfg.conf, iou=cfg.iou,
                    max_det=cfg.max_det)
    if found is None:
        why = ("no held-out images" if len(held) == 0 else
               "the FP32 model detects nothing on the held-out images to agree with")
        return "trained", trained, {"check": "none", "check_note": why}
    meta = {"check": "detections", "agreement_initial": found.scores["initial"],
            "agreement_trained": found.scores["trained"],
            "agreement_thresholds": list(found.thresholds)}
    return found.kept, (trained if found.kept == "trained" else initial), meta


def _head_check_meta(result: QatResult, unavailable: str | None) -> dict[str, Any]:
    """The interpreter's head-output check, when it decided (the engine could not run)."""
    if unavailable is None:
        return {}
    return {"check": "head error",
            "check_note": f"ONNX Runtime cannot run the model ({unavailable})",
            "holdout_initial": result.holdout_initial, "holdout_trained": result.holdout_trained}


def _plan_source(ctx: Any) -> tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]:
    """What QAT keeps float beyond --keep-float (--qat-plan): (node globs, cache-key parts,
    meta). keep-float adds nothing (and no key part: its artifacts keep their keys); auto
    adds int8-auto's kept groups, built or taken from the cache first, keyed by that
    artifact's hash and groups so that a changed plan trains again."""
    if ctx.cfg.qat_plan == "keep-float":
        return (), {}, {"plan": "keep-float"}
    from bench.diagnose.auto import auto_plan

    found = auto_plan(ctx)
    plan = {"auto_sha256": found.sha256, "kept_float": list(found.groups)}
    return found.nodes, {"plan": {"from": "int8-auto", **plan}}, \
        {"plan": "auto", **plan, "keep_float": list(ctx.cfg.keep_float)}


def _image_counts(result: QatResult, settings: QatSettings) -> dict[str, Any]:
    used = result.images_train + result.images_holdout
    counts: dict[str, Any] = {"images": used, "images_asked": settings.images,
                              "images_train": result.images_train,
                              "images_holdout": result.images_holdout}
    if used < settings.images:
        counts["images_note"] = (f"{used} of the {settings.images} images asked for "
                                 "(the calibration source has no more)")
    return counts


def _torch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


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
