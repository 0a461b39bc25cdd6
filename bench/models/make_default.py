"""`bench make-default`: generate the synthetic dataset, train the default detector on
the CPU with a fixed seed, evaluate it, export it to ONNX and write its manifest."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench.cache import file_sha256
from bench.errors import BenchError, ConfigError, InputDataError
from bench.models.default import DEFAULT_DIR, MANIFEST_NAME, ONNX_NAME

DEFAULTS = {"arch": "yolov7-tiny", "width": 0.5, "imgsz": 256, "iterations": 1600, "seed": 0,
            "threads": 2, "lr": 0.01}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bench make-default`."""
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR,
                        help=f"existing folder for {ONNX_NAME} and {MANIFEST_NAME} "
                             "(default: the package's embedded default)")
    parser.add_argument("--arch", default=DEFAULTS["arch"], help="yolov7-tiny or yolov7")
    parser.add_argument("--width", type=float, default=DEFAULTS["width"],
                        help="channel width multiplier (default 0.5)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int, default=None,
                        help=f"training iterations of batch 16 (default {DEFAULTS['iterations']})")
    budget.add_argument("--epochs", type=float, default=None,
                        help="training budget in passes over the train split instead")
    parser.add_argument("--imgsz", type=int, default=DEFAULTS["imgsz"], help="square input size")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="seed of the dataset generator and of training")
    parser.add_argument("--data", type=Path, default=None,
                        help="train on this COCO-format folder instead of the generated dataset")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the generated dataset is cached (default ~/.cache/bench)")
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"],
                        help="CPU threads for training (default 2)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"],
                        help=f"peak AdamW learning rate, cosine-decayed (default {DEFAULTS['lr']})")


def run(args: argparse.Namespace) -> int:
    """Build the default model; 0 on success, 2 with a one-line error otherwise."""
    try:
        manifest = _make(args)
    except BenchError as exc:
        print(f"bench make-default: error: {exc}", file=sys.stderr)
        return 2
    ev = manifest["evaluation"]
    print(f"wrote {Path(args.out) / ONNX_NAME}: mAP@[.5:.95] {ev['map']:.3f}, mAP50 "
          f"{ev['map50']:.3f} on {ev['num_images']} images; trained "
          f"{manifest['training']['iterations']} iterations in "
          f"{manifest['training']['wall_s'] / 60:.1f} min")
    return 0


def check_output_folder(out: Path) -> Path:
    out = Path(out)
    if not out.is_dir():
        raise ConfigError(f"--out {out}: no such folder; expected an existing, writable folder")
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {out}: not writable ({exc.strerror})") from exc
    return out


def _check_options(args: argparse.Namespace) -> None:
    from bench.models.yolov7 import ARCHS  # torch is imported only once the options are sane

    if args.arch not in ARCHS:
        raise ConfigError(f"--arch {args.arch!r}: unknown model size; expected one of "
                          f"{sorted(ARCHS)}")
    for name in ("iterations", "epochs"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name} {value}: expected a positive number")
    if args.data is not None and not (args.data / "annotations").is_dir():
        raise InputDataError(f"--data {args.data}: not a COCO-format dataset folder; expected "
                             "annotations/instances_{train,val}.json and train/, val/")


def _dataset(args: argparse.Namespace) -> tuple[Path, dict]:
    if args.data is not None:
        return args.data, {"path": str(args.data)}
    from bench.data import synthetic

    root = synthetic.ensure_default(args.cache_dir, seed=args.seed, progress=True)
    return root, {"generator": "bench.data.synthetic", "generator_version":
                  synthetic.GENERATOR_VERSION, "seed": args.seed,
                  "n_train": synthetic.DEFAULT_N_TRAIN, "n_eval": synthetic.DEFAULT_N_EVAL}


def _make(args: argparse.Namespace) -> dict:
    out = check_output_folder(args.out)
    _check_options(args)
    from bench.models import build_default

    root, dataset = _dataset(args)
    manifest = build_default.build(root, _train_config(args, root), out / ONNX_NAME)
    manifest["dataset"] = dataset
    manifest["command"] = reproduce_command(args)
    manifest["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest["environment"] |= {"python": platform.python_version(),
                                "platform": platform.platform()}
    manifest["onnx"]["sha256"] = file_sha256(out / ONNX_NAME)
    build_default.write_json_atomic(out / MANIFEST_NAME, manifest)
    return manifest


def _train_config(args: argparse.Namespace, root: Path):
    from bench.models.train import TrainConfig
    from bench.models.train_data import batches_per_epoch, open_split

    iterations = args.iterations or DEFAULTS["iterations"]
    if args.epochs is not None:
        images = len(open_split(root, "train"))
        iterations = max(1, round(args.epochs * batches_per_epoch(images, 16)))
    return TrainConfig(arch=args.arch, width=args.width, imgsz=args.imgsz,
                       iterations=iterations, seed=args.seed, threads=args.threads,
                       lr=args.lr)


def reproduce_command(args: argparse.Namespace) -> str:
    parts = ["bench", "make-default", "--arch", args.arch, "--width", str(args.width),
             "--imgsz", str(args.imgsz), "--seed", str(args.seed), "--threads", str(args.threads),
             "--lr", str(args.lr)]
    if args.epochs is not None:
        parts += ["--epochs", str(args.epochs)]
    else:
        parts += ["--iterations", str(args.iterations or DEFAULTS["iterations"])]
    if args.data is not None:
        parts += ["--data", str(args.data)]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench make-default", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

