"""YOLOv7 and YOLOv7-tiny in the official layer order.

Each topology is a flat list of layers ``(source, kind, args)``: ``source`` is -1 for the
previous layer, a negative offset, an absolute index, or a list of those (Concat, Detect),
exactly as indexed in the official training configs, so that ``model.<i>`` here is
``model.<i>`` there and official state_dicts load with ``strict=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bench.errors import ConfigError
from bench.models.common import MP, SP, SPPCSPC, Concat, Conv, RepConv
from bench.models.head import IDetect

Source = int | list[int]
Layer = tuple[Source, str, tuple]


@dataclass(frozen=True)
class ArchSpec:
    layers: tuple[Layer, ...]
    act: str
    anchors: tuple[tuple[float, ...], ...]
    strides: tuple[float, ...] = (8.0, 16.0, 32.0)


def _conv(c: int, k: int = 1, s: int = 1, src: Source = -1) -> Layer:
    return (src, "conv", (c, k, s))


def _tiny_elan(c: int, out: int) -> list[Layer]:
    return [_conv(c), _conv(c, src=-2), _conv(c, 3), _conv(c, 3),
            ([-1, -2, -3, -4], "concat", ()), _conv(out)]


def _elan(c: int, out: int) -> list[Layer]:
    return [_conv(c), _conv(c, src=-2), *[_conv(c, 3)] * 4,
            ([-1, -3, -5, -6], "concat", ()), _conv(out)]


def _head_elan(c: int, hidden: int, out: int) -> list[Layer]:
    return [_conv(c), _conv(c, src=-2), *[_conv(hidden, 3)] * 4,
            ([-1, -2, -3, -4, -5, -6], "concat", ()), _conv(out)]


def _down(c: int, route: int | None = None) -> list[Layer]:
    """Max-pool branch beside a strided-conv branch (yolov7's transition block)."""
    joined = [-1, -3] if route is None else [-1, -3, route]
    return [(-1, "mp", ()), _conv(c), _conv(c, src=-3), _conv(c, 3, 2), (joined, "concat", ())]


def _upsample_merge(c: int, lateral: int) -> list[Layer]:
    return [_conv(c), (-1, "upsample", ()), _conv(c, src=lateral), ([-1, -2], "concat", ())]


def _tiny_layers() -> tuple[Layer, ...]:
    backbone = [_conv(32, 3, 2), _conv(64, 3, 2), *_tiny_elan(32, 64),
                (-1, "mp", ()), *_tiny_elan(64, 128),                        # 8..14
                (-1, "mp", ()), *_tiny_elan(128, 256),                       # 15..21
                (-1, "mp", ()), *_tiny_elan(256, 512)]                       # 22..28
    spp = [_conv(256), _conv(256, src=-2), (-1, "sp", (5,)), (-2, "sp", (9,)),
           (-3, "sp", (13,)), ([-1, -2, -3, -4], "concat", ()), _conv(256),
           ([-1, -7], "concat", ()), _conv(256)]                             # 29..37
    head = [*_upsample_merge(128, 21), *_tiny_elan(64, 128),                # 38..47
            *_upsample_merge(64, 14), *_tiny_elan(32, 64),                  # 48..57
            _conv(128, 3, 2), ([-1, 47], "concat", ()), *_tiny_elan(64, 128),   # 58..65
            _conv(256, 3, 2), ([-1, 37], "concat", ()), *_tiny_elan(128, 256),  # 66..73
            _conv(128, 3, src=57), _conv(256, 3, src=65), _conv(512, 3, src=73),
            ([74, 75, 76], "detect", ())]
    return tuple(backbone + spp + head)


def _yolov7_layers() -> tuple[Layer, ...]:
    backbone = [_conv(32, 3), _conv(64, 3, 2), _conv(64, 3), _conv(128, 3, 2),
                *_elan(64, 256),                                            # 4..11
                *_down(128), *_elan(128, 512),                              # 12..24
                *_down(256), *_elan(256, 1024),                             # 25..37
                *_down(512), *_elan(256, 1024)]                             # 38..50
    head = [(-1, "sppcspc", (512,)),                                        # 51
            *_upsample_merge(256, 37), *_head_elan(256, 128, 256),          # 52..63
            *_upsample_merge(128, 24), *_head_elan(128, 64, 128),           # 64..75
            *_down(128, route=63), *_head_elan(256, 128, 256),              # 76..88
            *_down(256, route=51), *_head_elan(512, 256, 512),              # 89..101
            (75, "repconv", (256,)), (88, "repconv", (512,)), (101, "repconv", (1024,)),
            ([102, 103, 104], "detect", ())]
    return tuple(backbone + head)


ARCHS: dict[str, ArchSpec] = {
    "yolov7-tiny": ArchSpec(_tiny_layers(), "leaky",
                            ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119),
                             (116, 90, 156, 198, 373, 326))),
    "yolov7": ArchSpec(_yolov7_layers(), "silu",
                       ((12, 16, 19, 36, 40, 28), (36, 75, 76, 55, 72, 146),
                        (142, 110, 192, 243, 459, 401))),
}


def scale_channels(c: int, width: float) -> int:
    """Official width scaling: c * width rounded up to a multiple of 8."""
    return int(math.ceil(c * width / 8) * 8)


def _absolute(src: Source, i: int) -> Source:
    if isinstance(src, list):
        return [s if s >= 0 else i + s for s in src]
    return src if src >= 0 else i + src


class _LayerFactory:
    """Turns one layer spec into a module and its output channel count."""

    def __init__(self, spec: ArchSpec, num_classes: int, width: float):
        self.spec, self.num_classes, self.width = spec, num_classes, width

    def __call__(self, kind: str, args: tuple, c_in: Source, chans: list[int]):
        act = self.spec.act
        if kind == "conv":
            c = scale_channels(args[0], self.width)
            return Conv(chans[c_in], c, args[1], args[2], act=act), c
        if kind == "repconv":
            c = scale_channels(args[0], self.width)
            return RepConv(chans[c_in], c, act=act), c
        if kind == "sppcspc":
            c = scale_channels(args[0], self.width)
            return SPPCSPC(chans[c_in], c, act=act), c
        return self._parameterless(kind, args, c_in, chans)

    def _parameterless(self, kind: str, args: tuple, c_in: Source, chans: list[int]):
        if kind == "concat":
            return Concat(), sum(chans[j] for j in c_in)
        if kind == "mp":
            return MP(), chans[c_in]
        if kind == "sp":
            return SP(args[0]), chans[c_in]
        if kind == "upsample":
            return nn.Upsample(scale_factor=2.0, mode="nearest"), chans[c_in]
        if kind == "detect":
            anchors = [list(a) for a in self.spec.anchors]
            head = IDetect(self.num_classes, anchors, list(self.spec.strides),
                           [chans[j] for j in c_in])
            return head, 0
        raise ConfigError(f"layer kind {kind!r}: not a known YOLOv7 layer")


class YOLOv7(nn.Module):
    """A YOLOv7-family detector; ``model.<i>`` follows the official layer index."""

    def __init__(self, arch: str, num_classes: int, width: float, depth: float):
        super().__init__()
        spec = ARCHS[arch]
        self.arch, self.num_classes, self.width, self.depth = arch, num_classes, width, depth
        self.stride = spec.strides
        factory = _LayerFactory(spec, num_classes, width)
        layers, chans, self.sources = [], [3], []
        for i, (src, kind, args) in enumerate(spec.layers):
            src = _absolute(src, i)
            # chans[j + 1] holds layer j's output; index 0 is the image.
            module, c = factory(kind, args, _shift(src), chans)
            layers.append(module)
            chans.append(c)
            self.sources.append(src)
        self.model = nn.ModuleList(layers)
        self._kept = {j for s in self.sources for j in _as_list(s)}

    @property
    def head(self) -> IDetect:
        return self.model[-1]

    def forward(self, x: torch.Tensor):
        outputs: list[torch.Tensor | None] = []
        for i, (layer, src) in enumerate(zip(self.model, self.sources)):
            x = layer([outputs[j] for j in src] if isinstance(src, list) else
                      (x if src == i - 1 else outputs[src]))
            outputs.append(x if i in self._kept else None)
        return x


def _shift(src: Source) -> Source:
    return [s + 1 for s in src] if isinstance(src, list) else src + 1


def _as_list(src: Source) -> list[int]:
    return src if isinstance(src, list) else [src]


def build_model(arch: str = "yolov7-tiny", num_classes: int = 80, width: float = 1.0,
                depth: float = 1.0) -> YOLOv7:
    """Build a randomly initialised YOLOv7-family model (training topology, IDetect head).

    ``width`` scales every channel count (rounded up to a multiple of 8, as the official
    ``width_multiple``). ``depth`` is accepted for the official interface but changes
    nothing: every layer of these configs repeats once, and the official rule leaves
    single layers alone.
    """
    if arch not in ARCHS:
        raise ConfigError(f"model arch {arch!r}: unknown; expected one of {sorted(ARCHS)}")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(f"num_classes {num_classes!r}: expected an integer >= 1")
    for name, value in (("width", width), ("depth", depth)):
        if not (isinstance(value, (int, float)) and 0 < value <= 4):
            raise ConfigError(f"model {name} {value!r}: expected a number in (0, 4]")
    return YOLOv7(arch, num_classes, float(width), float(depth))
