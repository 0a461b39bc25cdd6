"""Train a YOLOv7-family detector on a COCO-format dataset, on the CPU.

Deterministic by construction: a fixed seed drives initialisation, batch order and
augmentation, and the budget is a number of iterations (not wall time). The wall time is
measured and reported beside it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.data.coco import CocoDataset
from bench.errors import ConfigError
from bench.models.loss import DetectionLoss, LossGains
from bench.models.train_data import (
    Augment,
    TrainSet,
    epoch_order,
    load_train_set,
    make_batch,
    open_split,
)
from bench.models.yolov7 import build_model


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "yolov7-tiny"
    width: float = 0.5
    depth: float = 1.0
    imgsz: int = 256
    batch: int = 16
    iterations: int = 1500
    lr: float = 1e-3
    final_lr_ratio: float = 0.01  # cosine decays to lr * final_lr_ratio
    warmup: int = 100             # iterations of linear warm-up
    weight_decay: float = 0.05    # AdamW, conv weights only
    ema_decay: float = 0.999
    ema_tau: float = 200.0        # EMA decay ramps up as 1 - exp(-step / tau)
    seed: int = 0
    threads: int = 2
    log_every: int = 50
    augment: Augment = field(default_factory=Augment)
    gains: LossGains = field(default_factory=LossGains)
    scale_gains: bool = True      # the official scaling of the gains by classes and imgsz

    def __post_init__(self) -> None:
        for name in ("imgsz", "batch", "iterations", "threads", "log_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ConfigError(f"training {name} {value!r}: expected a positive integer")
        if self.imgsz % 32:
            raise ConfigError(f"training imgsz {self.imgsz}: expected a multiple of 32")


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module          # the EMA weights, eval mode, unfused
    iterations: int
    epochs: float
    wall_s: float
    loss_log: tuple[tuple[int, float], ...]  # (iteration, mean loss since the last entry)
    num_train_images: int


class ModelEma:
    """Exponential moving average of every floating-point state entry (weights and BN
    statistics); evaluating the average is worth several mAP points on short runs."""

    def __init__(self, model: nn.Module, decay: float, tau: float):
        self.ema = copy.deepcopy(model).eval()
        self.decay, self.tau, self.updates = decay, tau, 0
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        current = model.state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(current[name].detach(), alpha=1 - d)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_kernel = p.ndim > 1 and "implicit" not in name
        (decay if is_kernel else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine from lr down to lr * final_lr_ratio."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.iterations - config.warmup)
    low = config.lr * config.final_lr_ratio
    return low + (config.lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


def _batches(data: TrainSet, batch: int, rng: np.random.Generator):
    while True:
        yield from epoch_order(len(data.images), batch, rng)


Progress = Callable[[int, float, nn.Module], None]


def train_on(data: TrainSet, num_classes: int, config: TrainConfig,
             progress: Progress | None = None) -> TrainResult:
    """Train a fresh model on letterboxed images already in memory.

    ``progress(iteration, mean_loss, ema_model)`` is called every ``log_every`` iterations.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _loop(data, num_classes, config, rng, progress)
    finally:
        torch.set_num_threads(previous_threads)


class _Trainer:
    """The model, loss, optimizer and EMA of one run; ``step`` does one iteration."""

    def __init__(self, data: TrainSet, num_classes: int, config: TrainConfig,
                 rng: np.random.Generator):
        model = build_model(config.arch, num_classes, config.width, config.depth).train()
        # oneDNN's convolutions run ~15% faster on NHWC tensors on the CPU.
        self.model = model.to(memory_format=torch.channels_last)
        self.loss_fn = DetectionLoss(model.head, config.imgsz, config.gains, config.scale_gains)
        self.optimizer = make_optimizer(model, config)
        self.ema = ModelEma(model, config.ema_decay, config.ema_tau)
        self.data, self.config, self.rng = data, config, rng
        self.batch = min(config.batch, len(data.images))

    def step(self, step: int, indices: np.ndarray) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, self.config)
        images, targets = make_batch(self.data, indices, self.rng, self.config.augment)
        images = images.contiguous(memory_format=torch.channels_last)
        loss, _ = self.loss_fn(self.model(images), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.ema.update(self.model)
        return float(loss.detach())


def _loop(data: TrainSet, num_classes: int, config: TrainConfig, rng: np.random.Generator,
          progress: Progress | None) -> TrainResult:
    trainer = _Trainer(data, num_classes, config, rng)
    log, running, start = [], [], time.perf_counter()
    for step, indices in zip(range(config.iterations), _batches(data, trainer.batch, rng)):
        running.append(trainer.step(step, indices))
        if (step + 1) % config.log_every == 0 or step + 1 == config.iterations:
            log.append((step + 1, float(np.mean(running))))
            running = []
            if progress:
                progress(step + 1, log[-1][1], trainer.ema.ema)
    wall = time.perf_counter() - start
    epochs = config.iterations * trainer.batch / len(data.images)
    return TrainResult(trainer.ema.ema.eval(), config.iterations, epochs, wall, tuple(log),
                       len(data.images))


def train(dataset_root: str | Path, config: TrainConfig,
          progress: Progress | None = None) -> tuple[TrainResult, CocoDataset]:
    """Train on ``dataset_root``'s train split; returns the result and the split read."""
    split = open_split(dataset_root, "train")
    data = load_train_set(split, config.imgsz)
    return train_on(data, split.num_classes, config, progress), split
