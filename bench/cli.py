"""The `bench` command: everything around the suite that a person runs by hand.

  bench make-default        generate the dataset, train and export the embedded default
  bench report RUN          render a run again (rich table, --markdown for summary.md)
  bench compare A B         two runs side by side, B gated against A
  bench baseline promote R  make run R the stored baseline (refuses partial runs)
  bench build VARIANT       write one variant's ONNX (e.g. the Q/DQ model for TensorRT)
  bench sensitivity VARIANT rank an INT8 variant's quantization groups by mAP cost
  bench env                 versions of every runtime and sensor library; what this
                            machine can run: engines and power sources

The benchmark itself is `pytest suites/ --benchmark-only` (see README).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench.errors import BenchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_make_default(sub)
    from bench.report.commands import add_report_commands

    add_report_commands(sub)
    _add_build(sub)
    from bench.diagnose.cli import add_sensitivity

    add_sensitivity(sub)  # bench sensitivity VARIANT (bench/diagnose/cli.py)
    env = sub.add_parser("env", help="library versions; engines and power sources, and why "
                                     "any cannot run here")
    env.set_defaults(handler=_env)
    return parser


# What `bench env` reports, by the module a user imports: runtimes, then sensor libraries,
# then the rest of the stack. Versions come from the installed distributions' metadata
# (onnxruntime-gpu and onnxruntime both provide `onnxruntime`), so nothing is imported.
ENV_MODULES = (
    ("runtime", ("onnxruntime", "tensorrt", "torch", "pycuda", "cuda")),
    ("sensors", ("jtop", "pynvml")),
    ("stack", ("onnx", "numpy", "pycocotools", "pytest_benchmark", "rich")),
)


def version_line() -> str:
    from bench import __version__

    return f"bench {__version__} (yolo-qbench; Python {sys.version.split()[0]})"


def module_versions(modules: Sequence[str]) -> dict[str, str | None]:
    """module -> 'distribution version' for each distribution providing it, or None."""
    import importlib.metadata as md

    providers = md.packages_distributions()
    found: dict[str, str | None] = {}
    for module in modules:
        dists = sorted(set(providers.get(module, ())))
        versions = []
        for dist in dists:
            try:
                versions.append(f"{dist} {md.version(dist)}")
            except md.PackageNotFoundError:
                continue
        found[module] = ", ".join(versions) or None
    return found


def _add_make_default(sub: argparse._SubParsersAction) -> None:
    from bench.models import make_default

    parser = sub.add_parser(
        "make-default", help="generate the dataset, train and export the embedded default",
        description="Generate the synthetic COCO-format dataset, train the default YOLOv7 on "
                    "the CPU with a fixed seed, export it to ONNX and write its manifest.")
    make_default.add_arguments(parser)
    parser.set_defaults(handler=make_default.run)


def _add_build(sub: argparse._SubParsersAction) -> None:
    from bench.config import ALL_VARIANTS

    parser = sub.add_parser(
        "build", help="write one variant's ONNX artifact (FP16 or Q/DQ) to a file",
        description="Build one variant exactly as the suite does (same calibration, placement "
                    "and cache) and copy the artifact to --out. Suite options such as --model, "
                    "--calib, --calib-count, --qdq-profile, --keep-float apply as BENCH_<NAME> "
                    "environment variables or [tool.bench] keys.")
    parser.add_argument("variant", choices=[v for v in ALL_VARIANTS if not v.startswith("trt")])
    parser.add_argument("--out", required=True, help="where to write the ONNX file")
    parser.add_argument("--model", help="FP32 ONNX (default: the embedded default)")
    parser.add_argument("--calib", help="calibration images (COCO folder or image folder)")
    parser.add_argument("--coco", help="COCO folder (its train split calibrates)")
    parser.add_argument("--qdq-profile", choices=["tensorrt", "cpu"],
                        help="Q/DQ profile (default: tensorrt, the deployable one)")
    parser.set_defaults(handler=_build)


def _build(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from bench.build import build_variant
    from bench.config import load_config
    from bench.run import RunContext

    out = Path(args.out)
    if not out.parent.is_dir():
        raise BenchError(f"option --out: folder {out.parent} does not exist")
    cfg = load_config({"model": args.model, "calib": args.calib, "coco": args.coco,
                       "qdq_profile": args.qdq_profile or "tensorrt"})
    artifact = build_variant(args.variant, RunContext(cfg).build_context())
    shutil.copyfile(artifact.path, out)
    print(f"{args.variant}: wrote {out} ({artifact.bytes / 1e6:.1f} MB, "
          f"{'from cache' if artifact.cached else f'built in {artifact.build_s:.1f} s'})")
    return 0


def _env(args: argparse.Namespace) -> int:
    from bench.engines.factory import engine_class
    from bench.power.auto import make_sampler

    print(version_line())
    for kind, modules in ENV_MODULES:
        for module, version in module_versions(modules).items():
            print(f"{kind:<7} {module:<16} {version or 'not installed'}")

    for backend, device in (("onnxruntime", "cpu"), ("onnxruntime", "cuda"),
                            ("tensorrt", "cuda"), ("torch", "cpu"), ("torch", "cuda")):
        try:
            reason = engine_class(backend).unavailable_reason(device)
        except ImportError as exc:
            reason = f"cannot import its module ({exc})"
        print(f"engine {backend:<12} {device:<5} {'ok' if reason is None else reason}")
    sampler = make_sampler("auto")
    reading = sampler.stop() if sampler.source == "none" else None
    print(f"power  auto picks {sampler.source}" + (f" ({reading.reason})" if reading else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BenchError as exc:
        print(f"bench {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
