"""QAT speed: the old training loop (git revision BASE) against the current one, interleaved
in one process on the same images, plus where a step's time goes and the interpreter's
training step against the same network as a native torch.nn.Module.

    PYTHONPATH=$PWD python scripts/bench_qat_speed.py --model default --steps 6
    PYTHONPATH=$PWD python scripts/bench_qat_speed.py --model tiny320 --steps 4

Prints per-step medians (seconds), the current loop's one-off costs (teacher targets,
held-out check) and both loops' projected time for a default QAT run on 512 images: the
old loop at its default of 200 steps of 8, the current one at its own default
(bench.quant.qat.MIN_DEFAULT_STEPS), and both at 200. Ratios are what to compare on a
shared machine, not absolute times.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import torch

from bench.quant import qat as new_qat
from bench.quant.ptq import quant_plan

BASE = "96f8907"  # the revision whose QAT this script compares against
REPO = Path(__file__).resolve().parent.parent
OLD_DEFAULT_STEPS, DEFAULT_IMAGES, BATCH = 200, 512, 8


def _old_qat() -> ModuleType:
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{BASE}:bench/quant/qat.py"],
                            check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("qat_old", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules["qat_old"] = module  # dataclasses look their module up there
    exec(compile(source, f"{BASE}:bench/quant/qat.py", "exec"), module.__dict__)
    return module


def _model(name: str, folder: Path) -> tuple[Path, int, torch.nn.Module]:
    """(ONNX path, image size, the same network as a native fused torch module)."""
    from bench.models.default import default_model_path, load_manifest
    from bench.models.export import export_onnx, fused_from_onnx
    from bench.models.fuse import fuse
    from bench.models.yolov7 import build_model

    if name == "default":
        path, meta = default_model_path(), load_manifest()["model"]
        native = fused_from_onnx(onnx.load(str(path)), meta["arch"], meta["num_classes"],
                                 meta["width"])
        return path, int(meta["imgsz"]), native
    torch.manual_seed(0)
    model = build_model("yolov7-tiny", num_classes=80).eval()
    path = export_onnx(model, folder / "yolov7-tiny-320.onnx", 320)
    return path, 320, fuse(model)


def _images(imgsz: int, count: int) -> np.ndarray:
    from bench.data.calibration import calibration_batches
    from bench.data.coco import CocoDataset
    from bench.data.synthetic import ensure_default

    source = CocoDataset(ensure_default(None), split="train")
    batches = calibration_batches(source, count, imgsz, BATCH)
    return np.concatenate([np.rint(b * 255).astype(np.uint8) for b in batches])


def _amax(path: Path, plan, images: np.ndarray) -> dict[str, float]:
    from bench.quant.calibrators import compute_amax
    from bench.quant.collect import collect_histograms

    floats = [images[i:i + BATCH].astype(np.float32) / 255 for i in range(0, 16, BATCH)]
    hists = collect_histograms(path, list(plan.activation_tensors), floats, progress=False)
    return {n: float(compute_amax(h, "mse", percentile=99.99)) for n, h in hists.items()}


def _loop_times(module, model, plan, amax, images, steps: int) -> tuple[float, float]:
    """(median-free mean seconds per step of the training loop, one-off seconds)."""
    settings = module.QatSettings(steps=steps, batch=BATCH, lr=1e-5)
    start = time.perf_counter()
    result = module.run_qat(model, plan, amax, images, settings, profile="cpu",
                            progress=False)
    total = time.perf_counter() - start
    return result.seconds / result.steps, total - result.seconds


def _old_stepper(old, model, plan, amax, images):
    from bench.models.onnx_torch import OnnxModule

    student, teacher = OnnxModule(model), OnnxModule(model)
    teacher.requires_grad_(False)
    quant = old.FakeQuantizer(plan, amax, "cpu", learn_scales=True)
    student.set_taps(quant.tapped_names)
    watched = quant.supervised_tensors(model)
    params = [p for p in student.parameters() if p.requires_grad] + quant.parameters()
    opt = torch.optim.Adam(params, lr=1e-5)
    batch = torch.from_numpy(images[:BATCH]).float().div_(255)

    def step(t: _Timer) -> None:
        with torch.no_grad():
            t_mid = teacher.forward_collect(batch, watched)[1]
        t("teacher forward")
        s_mid = student.forward_collect(batch, watched, tap=quant)[1]
        t("student forward (fake-quant)")
        loss = torch.stack([old._normalised_mse(s_mid[n], t_mid[n]) for n in watched]).mean()
        t("loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t("backward")
        opt.step()
        t("optimizer")
    return step


def _new_stepper(model, plan, amax, images):
    from bench.models.onnx_torch import OnnxModule

    student = OnnxModule(model).to_channels_last()
    quant = new_qat.FakeQuantizer(plan, amax, "cpu", learn_scales=True)
    student.set_taps(quant.tapped_names)
    watched = quant.supervised_tensors(model)
    teacher = new_qat.Teacher(model, images[:2 * BATCH], watched, BATCH)
    params = [p for p in student.parameters() if p.requires_grad] + quant.parameters()
    opt = torch.optim.Adam(params, lr=1e-5)
    index = np.arange(BATCH)

    def step(t: _Timer) -> None:
        targets = teacher.of(index)
        t("teacher targets (cached)")
        batch = new_qat._as_float(images[index])
        s_mid = student.forward_collect(batch, watched, tap=quant)[1]
        t("student forward (fake-quant)")
        loss = new_qat._loss(s_mid, targets, watched)
        t("loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t("backward")
        opt.step()
        t("optimizer")
    return step


def _breakdowns(old, model, plan, amax, images, steps: int) -> dict[str, dict[str, float]]:
    """Old and new steps alternated one by one (medians), so load swings hit both alike."""
    steppers = {"old": _old_stepper(old, model, plan, amax, images),
                "new": _new_stepper(model, plan, amax, images)}
    times: dict[str, dict[str, list[float]]] = {k: {} for k in steppers}
    for _ in range(steps):
        for key, step in steppers.items():
            step(_Timer(times[key]))
    return {k: {part: float(np.median(v)) for part, v in got.items()}
            for k, got in times.items()}


class _Timer:
    def __init__(self, into: dict[str, list[float]]):
        self.into, self.last = into, time.perf_counter()

    def __call__(self, label: str) -> None:
        now = time.perf_counter()
        self.into.setdefault(label, []).append(now - self.last)
        self.last = now


def _native_vs_interpreter(path: Path, native: torch.nn.Module, images: np.ndarray,
                           steps: int) -> tuple[float, float, float]:
    """Seconds per plain training step (forward, MSE to a fixed target, backward, Adam)
    of the interpreter and of the native module, interleaved; and their max output gap."""
    from bench.models.onnx_torch import OnnxModule

    interp = OnnxModule(onnx.load(str(path)))
    native = native.train(False)
    batch = torch.from_numpy(images[:BATCH]).float().div_(255)
    with torch.no_grad():
        target = native(batch)
        gap = float((interp(batch)[0] - target).abs().max())
    runs = {"interpreter": (interp, lambda m: m(batch)[0]), "native": (native, lambda m: m(batch))}
    optim = {k: torch.optim.Adam(m.parameters(), lr=1e-6) for k, (m, _) in runs.items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(steps):
        for key, (_, call) in runs.items():
            start = time.perf_counter()
            loss = ((call(runs[key][0]) - target) ** 2).mean()
            optim[key].zero_grad(set_to_none=True)
            loss.backward()
            optim[key].step()
            times[key].append(time.perf_counter() - start)
    return (float(np.median(times["interpreter"][1:])), float(np.median(times["native"][1:])),
            gap)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("default", "tiny320"), default="default")
    parser.add_argument("--steps", type=int, default=6, help="steps per timed loop")
    parser.add_argument("--images", type=int, default=64, help="images the loops train on")
    parser.add_argument("--rounds", type=int, default=2, help="old/new pairs, interleaved")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--skip", default="", help="comma list of: loops,breakdown,native")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        path, imgsz, native = _model(args.model, Path(tmp))
        model, plan = quant_plan(path, ("first_conv", "head", "decode"))
        images = _images(imgsz, args.images)
        amax = _amax(path, plan, images)
        old = _old_qat()
        print(f"model {args.model} ({path.name}, {imgsz} px), {len(images)} images, batch "
              f"{BATCH}, torch threads {torch.get_num_threads()}")
        if "loops" not in skip:
            _report_loops(old, model, plan, amax, images, args)
        if "breakdown" not in skip:
            both = _breakdowns(old, model, plan, amax, images, args.steps)
            for label, got in both.items():
                total = sum(got.values())
                parts = ", ".join(f"{k} {v:.3f} s ({100 * v / total:.0f} %)"
                                  for k, v in got.items())
                print(f"breakdown {label}: step {total:.3f} s = {parts}")
            steps = {k: sum(v.values()) for k, v in both.items()}
            print(f"step ratio old/new (alternated): {steps['old'] / steps['new']:.2f}")
        if "native" not in skip:
            interp, nat, gap = _native_vs_interpreter(path, native, images, args.steps + 1)
            print(f"training step without fake-quant: interpreter {interp:.3f} s, native "
                  f"torch.nn.Module {nat:.3f} s, ratio {interp / nat:.2f} "
                  f"(outputs differ by at most {gap:.2e})")
    return 0


def _report_loops(old, model, plan, amax, images, args) -> None:
    per_step: dict[str, list[float]] = {"old": [], "new": []}
    once: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for label, module in (("old", old), ("new", new_qat)):
            step, fixed = _loop_times(module, model, plan, amax, images, args.steps)
            per_step[label].append(step)
            once[label].append(fixed)
            print(f"  {label}: {step:.3f} s/step, one-off {fixed:.2f} s")
    o, n = (float(np.median(per_step[k])) for k in ("old", "new"))
    # One-off costs scale with the images: the teacher runs once over each.
    fixed_new = float(np.median(once["new"])) * DEFAULT_IMAGES / len(images)
    fixed_old = float(np.median(once["old"]))
    proj_old = OLD_DEFAULT_STEPS * o + fixed_old
    new_steps = new_qat.MIN_DEFAULT_STEPS
    proj_same, proj_new = OLD_DEFAULT_STEPS * n + fixed_new, new_steps * n + fixed_new
    print(f"per step: old {o:.3f} s, new {n:.3f} s, ratio {o / n:.2f}")
    print(f"projected QAT on {DEFAULT_IMAGES} images: old loop, {OLD_DEFAULT_STEPS} steps "
          f"(its default) {proj_old:.0f} s; new loop, {OLD_DEFAULT_STEPS} steps "
          f"{proj_same:.0f} s ({proj_old / proj_same:.2f}x); new loop, {new_steps} steps "
          f"(its default) {proj_new:.0f} s ({proj_old / proj_new:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
