"""A deterministic generator of a small COCO-format detection dataset.

Eight shape classes with COCO-like, non-contiguous category ids, drawn on textured,
noisy backgrounds with clutter, at varied image sizes (so letterboxing matters),
varied object sizes (small objects included) and partial occlusions. The annotated
box of an object is the box of its *visible* pixels and its area the visible pixel
count, as COCO's own masks would give.

Every image draws from its own random stream seeded by (seed, split, index), so the
same seed gives byte-identical files and the two splits never share an image.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.ahead import ordered_ahead
from bench.atomic import (
    HAVE_LOCKS,
    TMP_PREFIX,
    file_lock,
    lock_is_held,
    output_error,
    sweep_stale,
    temp_name,
)

GENERATOR_VERSION = "3"
DEFAULT_SEED = 0
DEFAULT_N_TRAIN = 1500
DEFAULT_N_EVAL = 250

# Ids spread over 1..90 like COCO's, so every class-index -> category-id mapping is exercised.
CATEGORIES: tuple[tuple[int, str], ...] = (
    (2, "circle"),
    (5, "square"),
    (11, "triangle"),
    (17, "cross"),
    (23, "ring"),
    (42, "star"),
    (64, "ellipse"),
    (90, "hexagon"),
)
SPLITS = ("train", "val")
_SIZE_RANGE = (192, 320)  # image width and height, pixels
_MAX_OBJECTS = 8
_MIN_VISIBLE = 0.5  # an object keeps at least this share of its pixels when others cover it
_MIN_CONTRAST = 90  # L1 distance, in RGB levels, between an object and the background under it
_SUPERSAMPLE = 2  # masks are drawn at 2x and reduced, for anti-aliased edges


@dataclass(frozen=True)
class _Shape:
    """One object to draw: class, centre, bounding-circle radius, rotation, colour."""

    label: int
    cx: float
    cy: float
    radius: float
    angle: float
    aspect: float
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class _Placed:
    """A shape with its anti-aliased alpha (clipped to the image), corner and footprint."""

    shape: _Shape
    alpha: np.ndarray  # uint8, the shape's box inside the image
    x0: int
    y0: int
    footprint: np.ndarray  # HxW bool, full image
    area: int  # pixels in the footprint

    @property
    def window(self) -> tuple[slice, slice]:
        return (
            slice(self.y0, self.y0 + self.alpha.shape[0]),
            slice(self.x0, self.x0 + self.alpha.shape[1]),
        )


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


# --- background -----------------------------------------------------------------


def _background_field(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A linear colour gradient plus low-frequency blotches, drawn on a tiny grid
    and upsampled bicubically (cheap, and smooth like a real out-of-focus scene)."""
    gw, gh = (int(v) for v in rng.integers(3, 9, size=2))
    c0, c1 = rng.uniform(30, 225, size=(2, 3))
    theta = rng.uniform(0, 2 * math.pi)
    xs, ys = np.meshgrid(np.linspace(-0.5, 0.5, gw), np.linspace(-0.5, 0.5, gh))
    t = np.clip(xs * math.cos(theta) + ys * math.sin(theta) + 0.5, 0, 1)[..., None]
    blotches = rng.uniform(-1, 1, size=(gh, gw, 3)) * rng.uniform(10, 40)
    grid = (c0 + t * (c1 - c0) + blotches).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)


def _draw_clutter(rng: np.random.Generator, img: Image.Image) -> None:
    """Lines, arcs and specks: structure that is not an object of any class."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(rng.integers(2, 9)):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, x1 = rng.uniform(-20, w + 20, size=2)
        y0, y1 = rng.uniform(-20, h + 20, size=2)
        if rng.random() < 0.5:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 3)))
        else:
            box = [min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1]
            start = float(rng.uniform(0, 360))
            draw.arc(box, start, start + float(rng.uniform(30, 200)), fill=colour, width=1)
    for _ in range(rng.integers(0, 30)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.rectangle([x, y, x + rng.integers(1, 3), y + rng.integers(1, 3)], fill=colour)


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img = _background_field(rng, w, h)
    _draw_clutter(rng, img)
    return img


# --- shapes ---------------------------------------------------------------------


def _regular(n: int, start_deg: float) -> list[tuple[float, float]]:
    return [
        (
            math.cos(math.radians(start_deg + k * 360 / n)),
            math.sin(math.radians(start_deg + k * 360 / n)),
        )
        for k in range(n)
    ]


def _star() -> list[tuple[float, float]]:
    outer = _regular(10, -90)
    return [
        (x * (1.0 if k % 2 == 0 else 0.45), y * (1.0 if k % 2 == 0 else 0.45))
        for k, (x, y) in enumerate(outer)
    ]


def _cross() -> list[tuple[float, float]]:
    a, b = 0.3, 0.95  # arm half-width and arm length, of the bounding radius
    quarter = [(a, -b), (a, -a), (b, -a)]
    pts: list[tuple[float, float]] = []
    for k in range(4):  # rotate one quarter of the outline by k * 90 degrees
        c, s = round(math.cos(k * math.pi / 2)), round(math.sin(k * math.pi / 2))
        pts += [(x * c - y * s, x * s + y * c) for x, y in quarter]
    return pts


def _ellipse(aspect: float) -> list[tuple[float, float]]:
    return [(x, y * aspect) for x, y in _regular(48, 0)]


def _unit_outline(name: str, aspect: float) -> list[tuple[float, float]]:
    """The outline on the unit circle; circle and ring are drawn as ellipses instead."""
    return {
        "square": lambda: _regular(4, 45),
        "triangle": lambda: _regular(3, -90),
        "cross": _cross,
        "star": _star,
        "ellipse": lambda: _ellipse(aspect),
        "hexagon": lambda: _regular(6, 0),
    }[name]()


def _transform(
    pts, shape: _Shape, scale: float, origin: tuple[float, float]
) -> list[tuple[float, float]]:
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    r = shape.radius * scale
    ox, oy = origin
    return [(ox + r * (x * c - y * s), oy + r * (x * s + y * c)) for x, y in pts]


def _draw_alpha(shape: _Shape) -> tuple[np.ndarray, int, int]:
    """Anti-aliased alpha (uint8) of one shape in a local square, and the square's corner."""
    k = _SUPERSAMPLE
    x0, y0 = math.floor(shape.cx - shape.radius) - 1, math.floor(shape.cy - shape.radius) - 1
    side = math.ceil(2 * shape.radius) + 3
    canvas = Image.new("L", (side * k, side * k), 0)
    draw = ImageDraw.Draw(canvas)
    name = CATEGORIES[shape.label][1]
    cx, cy, r = (shape.cx - x0) * k, (shape.cy - y0) * k, shape.radius * k
    if name in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if name == "ring":
            ri = r * shape.aspect
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    else:
        draw.polygon(_transform(_unit_outline(name, shape.aspect), shape, k, (cx, cy)), fill=255)
    return np.asarray(canvas.reduce(k)), x0, y0


def _clip_to_image(
    alpha: np.ndarray, x0: int, y0: int, w: int, h: int
) -> tuple[np.ndarray, int, int]:
    """The part of a local alpha that lies inside the w x h image, and its new corner."""
    cx0, cy0 = max(0, -x0), max(0, -y0)
    cx1, cy1 = min(alpha.shape[1], w - x0), min(alpha.shape[0], h - y0)
    return alpha[cy0:cy1, cx0:cx1], x0 + cx0, y0 + cy0


def _sample_shape(rng: np.random.Generator, w: int, h: int) -> _Shape:
    label = int(rng.integers(len(CATEGORIES)))
    # Log-uniform size: many small objects, a few large ones. Version 1 drew radii from
    # 5 px and let 70 % of an object leave the frame: 59 % of the objects were COCO-small
    # and a CPU-trained default stayed far below the mAP it needs for quantization losses
    # to show. From 13 px, and at most 40 % outside, small objects are about a third.
    radius = float(math.exp(rng.uniform(math.log(13), math.log(0.42 * min(w, h)))))
    name = CATEGORIES[label][1]
    aspect = float(rng.uniform(0.35, 0.6)) if name != "ring" else float(rng.uniform(0.45, 0.7))
    max_angle = {"square": 20, "cross": 30}.get(name, 180)
    return _Shape(
        label=label,
        cx=float(rng.uniform(0.6 * radius, w - 0.6 * radius)),  # up to 40 % may leave the frame
        cy=float(rng.uniform(0.6 * radius, h - 0.6 * radius)),
        radius=radius,
        angle=math.radians(float(rng.uniform(-max_angle, max_angle))),
        aspect=aspect,
        colour=(0, 0, 0),
    )


def _pick_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A colour that stands out from the mean background under the object."""
    mean = under.reshape(-1, 3).mean(axis=0)
    colour = rng.integers(0, 256, size=3)
    for _ in range(20):
        if np.abs(colour - mean).sum() >= _MIN_CONTRAST:
            break
        colour = rng.integers(0, 256, size=3)
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def _keeps_others_visible(footprint: np.ndarray, placed: list[_Placed]) -> bool:
    for i, p in enumerate(placed):
        still = _visible(i, placed) & ~footprint[p.window]
        if still.sum() < _MIN_VISIBLE * p.area:
            return False
    return True


def _visible(i: int, placed: list[_Placed]) -> np.ndarray:
    """Shape i's footprint, in its own window, minus what the shapes drawn after it cover."""
    p = placed[i]
    mask = p.footprint[p.window]
    for q in placed[i + 1 :]:
        mask = mask & ~q.footprint[p.window]
    return mask


def _footprint(alpha: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    full = np.zeros((h, w), dtype=bool)
    full[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = alpha >= 128
    return full


def _try_place(rng: np.random.Generator, bg: np.ndarray, placed: list[_Placed]) -> _Placed | None:
    h, w = bg.shape[:2]
    shape = _sample_shape(rng, w, h)
    alpha, x0, y0 = _clip_to_image(*_draw_alpha(shape), w, h)
    footprint = _footprint(alpha, x0, y0, w, h)
    area = int(np.count_nonzero(alpha >= 128))
    if area < 12 or not _keeps_others_visible(footprint, placed):
        return None
    colour = _pick_colour(rng, bg[footprint])
    return _Placed(replace(shape, colour=colour), alpha, x0, y0, footprint, area)


def _place_shapes(rng: np.random.Generator, bg: np.ndarray) -> list[_Placed]:
    wanted = int(rng.integers(1, _MAX_OBJECTS + 1))
    placed: list[_Placed] = []
    for _ in range(wanted * 4):
        if len(placed) == wanted:
            break
        p = _try_place(rng, bg, placed)
        if p is not None:
            placed.append(p)
    return placed


def _composite(bg: Image.Image, placed: list[_Placed], rng: np.random.Generator) -> np.ndarray:
    img = bg.copy()
    for p in placed:
        box = (p.x0, p.y0, p.x0 + p.alpha.shape[1], p.y0 + p.alpha.shape[0])
        img.paste(p.shape.colour, box, Image.fromarray(p.alpha))
    # Sensor-like noise over everything, objects included; the sum of two uniforms is
    # bell-shaped and several times cheaper to draw than a Gaussian.
    k = int(rng.integers(2, 9))
    pixels = np.asarray(img, dtype=np.int16) + rng.integers(
        -k, k + 1, size=(img.height, img.width, 3), dtype=np.int16
    )
    pixels += rng.integers(-k, k + 1, size=pixels.shape, dtype=np.int16)
    return pixels.clip(0, 255).astype(np.uint8)


# --- annotations ----------------------------------------------------------------


def _annotation(i: int, placed: list[_Placed], image_id: int) -> dict | None:
    p = placed[i]
    ys, xs = np.nonzero(_visible(i, placed))
    if xs.size < 12:
        return None
    x0, y0 = p.x0 + int(xs.min()), p.y0 + int(ys.min())
    w, h = p.x0 + int(xs.max()) + 1 - x0, p.y0 + int(ys.max()) + 1 - y0
    return {
        "id": 0,  # numbered per split once all annotations are known
        "image_id": image_id,
        "category_id": CATEGORIES[p.shape.label][0],
        "bbox": [float(x0), float(y0), float(w), float(h)],
        "area": float(xs.size),
        "iscrowd": 0,
        "segmentation": [],
    }


def _render_image(seed: int, split: str, index: int) -> tuple[np.ndarray, list[_Placed]]:
    rng = _image_rng(seed, split, index)
    w, h = (int(v) for v in rng.integers(_SIZE_RANGE[0], _SIZE_RANGE[1] + 1, size=2))
    bg = _background(rng, w, h)
    placed = _place_shapes(rng, np.asarray(bg))
    return _composite(bg, placed, rng), placed


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png_bytes(pixels: np.ndarray) -> bytes:
    """An RGB PNG with every row "Up"-filtered and zlib level 1.

    Pillow tries every PNG filter on every row, which on noisy images takes half the
    generation time; one fixed filter compresses these images as well at twice the speed.
    """
    h, w, _ = pixels.shape
    rows = pixels.reshape(h, w * 3)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG's filters do
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    body = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw, 1))
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def _encoded(seed: int, split: str, index: int) -> tuple[bytes, tuple[int, int], list[_Placed]]:
    """One image rendered and PNG-encoded: (file bytes, (height, width), its objects)."""
    pixels, placed = _render_image(seed, split, index)
    return _png_bytes(pixels), pixels.shape[:2], placed


def _split_records(
    root: Path, seed: int, split: str, count: int, first_id: int, tick, workers: int | None
) -> tuple[list[dict], list[dict]]:
    """Render a split in a thread pool (numpy, Pillow and zlib release the GIL: measured,
    5.5-7.3 ms an image on 2 threads against 9.8-10.9 ms on one), written in index order;
    each image's own random stream makes the bytes the same with any number of threads."""
    images, anns = [], []
    (root / split).mkdir(parents=True, exist_ok=True)
    rendered = ordered_ahead(lambda i: _encoded(seed, split, i), range(count), ahead=16,
                             workers=workers)
    for index, (data, (h, w), placed) in enumerate(rendered):
        image_id = first_id + index
        name = f"{image_id:012d}.png"
        (root / split / name).write_bytes(data)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for i in range(len(placed)):
            ann = _annotation(i, placed, image_id)
            if ann is not None:
                anns.append(ann)
        tick()
    return images, anns


def _coco_json(seed: int, split: str, images: list[dict], anns: list[dict], first_ann: int) -> dict:
    anns = [{**a, "id": first_ann + i} for i, a in enumerate(anns)]
    return {
        "info": {
            "description": f"bench synthetic shapes, split {split}",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "year": 2024,
        },
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [
            {"id": cid, "name": name, "supercategory": "shape"} for cid, name in CATEGORIES
        ],
    }


def generate(
    root: Path,
    *,
    seed: int = DEFAULT_SEED,
    n_train: int = DEFAULT_N_TRAIN,
    n_eval: int = DEFAULT_N_EVAL,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write a COCO-format dataset under root.

    Files: annotations/instances_train.json, annotations/instances_val.json, train/*.png,
    val/*.png. Returns root. workers: rendering threads (default: the cores, up to 4); the
    files are the same with any number.
    """
    from bench.progress import bar as progress_bar

    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    bar = progress_bar(total=n_train + n_eval, desc="synthetic dataset", unit="img",
                       enabled=progress)
    counts = {"train": n_train, "val": n_eval}
    first = {"train": 1, "val": n_train + 1}  # image and annotation ids never repeat across splits
    first_ann = 1
    for split in SPLITS:
        images, anns = _split_records(root, seed, split, counts[split], first[split],
                                      bar.update, workers)
        text = json.dumps(_coco_json(seed, split, images, anns, first_ann), separators=(",", ":"))
        (root / "annotations" / f"instances_{split}.json").write_text(text)
        first_ann += len(anns)
    bar.close()
    return root


def default_datasets_dir() -> Path:
    """$BENCH_CACHE_DIR/datasets, else $XDG_CACHE_HOME/bench/datasets (~/.cache/bench/datasets)."""
    env = os.environ.get("BENCH_CACHE_DIR")
    if env:
        return Path(env) / "datasets"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench" / "datasets"


def dataset_key(seed: int, n_train: int, n_eval: int) -> str:
    return f"synthetic-v{GENERATOR_VERSION}-seed{seed}-train{n_train}-val{n_eval}"


def ensure_default(
    cache_dir: Path | None = None,
    *,
    seed: int = DEFAULT_SEED,
    n_train: int = DEFAULT_N_TRAIN,
    n_eval: int = DEFAULT_N_EVAL,
    progress: bool = True,
) -> Path:
    """Generate the dataset once as <cache_dir>/<key>/ (atomically) and return that root.

    cache_dir is the folder that holds generated datasets (default: default_datasets_dir());
    the key names the generator version, seed and split sizes. Generation runs under a
    lock (<key>.lock), so concurrent runs generate it once, in a .bench-tmp-<key>.* folder;
    such folders left by a killed run are removed here (only where no generation runs).
    """
    parent = Path(cache_dir) if cache_dir is not None else default_datasets_dir()
    final = parent / dataset_key(seed, n_train, n_eval)
    if final.is_dir():
        return final
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(parent, exc, "cannot create the datasets folder") from exc
    with file_lock(parent / f"{final.name}.lock"):
        _sweep_generations(parent, final.name)
        if final.is_dir():  # a concurrent run generated it while we waited
            return final
        tmp = parent / temp_name(final.name)
        try:
            tmp.mkdir()  # not mkdtemp: the dataset gets the umask's permissions, not 0700
            generate(tmp, seed=seed, n_train=n_train, n_eval=n_eval, progress=progress)
            os.replace(tmp, final)
        except OSError as exc:
            if not final.is_dir():
                raise output_error(tmp, exc, "cannot write the generated dataset") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _sweep_generations(parent: Path, held_key: str) -> list[Path]:
    """Remove leftover generation folders whose lock no process holds (older than a day
    where the platform has no locks). Called holding held_key's lock: that key's
    leftovers are dead by definition."""
    legacy = sweep_stale(parent, 3600.0, prefix=f".{held_key}.")  # earlier versions' mkdtemp
    if not HAVE_LOCKS:
        return legacy + sweep_stale(parent, 24 * 3600.0)

    def alive(entry: Path) -> bool:
        key = entry.name[len(TMP_PREFIX):].rsplit(".", 2)[0]
        return key != held_key and lock_is_held(parent / f"{key}.lock")

    return legacy + sweep_stale(parent, 0.0, keep=alive)
