"""Kill the suite at random moments and check that nothing is lost, promotable or left over.

On a short matrix of the embedded default this script

  1. runs the suite once on an empty cache and once warm (the clean mAPs, and the run
     durations that the kill moments are spread over), and promotes the cold run to the
     results folder's baseline.json;
  2. starts the suite N times (--kills, default 20) and sends it SIGKILL at a seeded,
     stratified random moment of its run (every so often on an empty cache, spread over
     the cold run's duration; otherwise warm, over the last warm run's duration, since a
     shared machine's speed drifts), then runs the suite again on the same
     folders and checks:
       (a) every earlier run folder and the baseline file are byte-identical to before;
       (b) the killed run cannot be promoted (`bench baseline promote` exits non-zero, or
           the killed run left no report.json) -- a kill that lands after the run has
           written its complete report is counted apart, and must be promotable;
       (c) the next run is complete and its mAPs equal the clean run's;
       (d) no temporary remains under the results and cache folders (.bench-* names,
           tmp* build folders, partial datasets) nor in the runs' private TMPDIR (beyond
           what a clean run leaves there: ONNX Runtime's .ses); new
           /tmp/bench-benchmark-*.json files are listed, not counted (other processes);
  3. sends one run SIGTERM while its second variant runs: it must leave a run folder whose
     report.json says complete: false, and that folder must not be promotable;
  4. runs two suites at once into one results folder and one (empty) cache folder: both
     must complete, with equal mAPs and distinct run folders.

Usage: PYTHONPATH=$PWD python scripts/bench_reliability.py [--kills 20] [--seed 0]
Prints one line per kill and the counts at the end; exits 1 when any check failed.
Everything is written under a fresh temporary folder (removed unless --keep).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMP_PREFIXES = (".bench-",)  # .bench-tmp-* (atomic writes, builds), .bench-write-probe-*


@dataclass
class RunResult:
    """One suite subprocess: how it ended, what it wrote."""

    rc: int | None
    wall_s: float
    run_dirs: list[Path]
    log: Path
    killed_at_s: float | None = None


@dataclass
class Tally:
    kills: int = 0
    survived: int = 0
    lost: list[str] = field(default_factory=list)
    promotable: list[str] = field(default_factory=list)
    finished_before_kill: int = 0
    no_report: int = 0
    refused: int = 0
    map_diffs: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    cold: int = 0
    ended_first: int = 0


class Bench:
    """The folders and the suite command line of one reliability session."""

    def __init__(self, work: Path, args: argparse.Namespace):
        self.work = work
        self.args = args
        self.results = work / "results"
        self.baseline = self.results / "baseline.json"
        self.tmpdir = work / "tmp"  # the runs' TMPDIR: anything left in it is a leftover
        self.tmpdir.mkdir(parents=True)
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(self.tmpdir),
                        PYTHONUNBUFFERED="1", COLUMNS="120")
        self.runs = 0
        self.tmp_bench_json = set(glob.glob("/tmp/bench-benchmark-*.json"))
        self.seen_leftovers: set[str] = set()  # each leftover is counted at the kill it shows
        self.tmp_clean: set[str] = set()  # what a clean run leaves in TMPDIR (ORT's .ses)

    def command(self, cache: Path, verbose: bool = False) -> list[str]:
        a = self.args
        return [sys.executable, "-m", "pytest", "suites/", "--benchmark-only",
                "-p", "no:cacheprovider", "-v" if verbose else "-q", "--variants", a.variants,
                "--eval-count", str(a.eval_count), "--bench-rounds", str(a.bench_rounds),
                "--calib-count", str(a.calib_count), "--results-dir", str(self.results),
                "--cache-dir", str(cache), "--baseline", str(self.baseline), "--no-progress"]

    def start(self, cache: Path, verbose: bool = False) -> tuple[subprocess.Popen, Path, float]:
        self.runs += 1
        log = self.work / "logs" / f"run{self.runs:03d}.log"
        log.parent.mkdir(exist_ok=True)
        handle = log.open("wb")
        proc = subprocess.Popen(self.command(cache, verbose), cwd=ROOT, env=self.env,
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        return proc, log, time.monotonic()

    def run_dirs(self) -> set[Path]:
        runs = self.results / "runs"
        return {p for p in runs.iterdir() if p.is_dir()} if runs.is_dir() else set()

    def run(self, cache: Path, kill_at: float | None = None,
            after: re.Pattern | None = None) -> RunResult:
        """Run the suite to its end, or SIGKILL its process group kill_at s after its start
        (or after `after` first shows in its output)."""
        before = self.run_dirs()
        proc, log, t0 = self.start(cache, verbose=after is not None)
        killed = None
        try:
            if kill_at is None:
                proc.wait(timeout=self.args.timeout)
            else:
                if after is not None:
                    wait_for_output(proc, log, after, self.args.timeout)
                try:
                    proc.wait(timeout=kill_at)
                except subprocess.TimeoutExpired:
                    killed = time.monotonic() - t0
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise SystemExit(f"a suite run took over {self.args.timeout} s; see {log}") from None
        wall = time.monotonic() - t0
        return RunResult(proc.returncode, wall, sorted(self.run_dirs() - before), log, killed)

    def promote(self, run_dir: Path) -> tuple[int, str]:
        """`bench baseline promote run_dir` to a scratch file; (exit code, its stderr)."""
        target = self.work / "promote-try.json"
        done = subprocess.run(
            [sys.executable, "-m", "bench.cli", "baseline", "promote", str(run_dir),
             "--to", str(target), "--results", str(self.results)],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300)
        target.unlink(missing_ok=True)
        return done.returncode, (done.stderr or done.stdout).strip().splitlines()[-1:]


def wait_for_output(proc: subprocess.Popen, log: Path, pattern: re.Pattern,
                    timeout: float) -> None:
    """Return once pattern shows in the run's log, or the run ended, or timeout passed."""
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if pattern.search(log.read_text(errors="replace")):
            return
        time.sleep(0.02)


def last_test_done(variants: str) -> re.Pattern:
    """The -v line of the last variant's test ending: the run writes its folder next."""
    from bench.config import ALL_VARIANTS

    last = sorted(variants.split(","), key=ALL_VARIANTS.index)[-1]
    return re.compile(rf"test_variant\[{re.escape(last)}\] (PASSED|FAILED|ERROR)")


def tree_hashes(paths: list[Path]) -> dict[str, str]:
    """relative path -> sha256 (files) or '-> target' (links) of every entry under paths."""
    found: dict[str, str] = {}
    for top in paths:
        entries = [top] if top.is_file() else sorted(top.rglob("*"))
        for entry in entries:
            if entry.is_symlink():
                found[str(entry)] = f"-> {os.readlink(entry)}"
            elif entry.is_file():
                found[str(entry)] = hashlib.sha256(entry.read_bytes()).hexdigest()
    return found


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    gone = [f"missing {k}" for k in before if k not in after]
    diff = [f"changed {k}" for k in before if k in after and after[k] != before[k]]
    return gone + diff


def report_of(run_dir: Path) -> dict | None:
    path = run_dir / "report.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def maps_of(report: dict) -> dict[str, float | None]:
    return {row["variant"]: row.get("map") for row in report["rows"]}


def listed_files_present(run_dir: Path, report: dict) -> bool:
    files = report.get("files") or []
    names = [f if isinstance(f, str) else f.get("name", "") for f in files]
    return bool(names) and all((run_dir / n).is_file() for n in names)


def leftovers(bench: Bench, caches: list[Path]) -> list[str]:
    """Temporaries that no run should leave: .bench-* names under the results and cache
    folders, tmp* folders in the artifact kinds, non-final entries in datasets/, anything
    in the runs' TMPDIR, new /tmp/bench-benchmark-*.json."""
    found: list[str] = []
    for top in [bench.results, *caches]:
        if not top.exists():
            continue
        for entry in top.rglob("*"):
            if entry.name.startswith(TEMP_PREFIXES):
                found.append(str(entry))
        artifacts = top / "artifacts"
        for kind in artifacts.iterdir() if artifacts.is_dir() else ():
            found += [str(p) for p in kind.glob("tmp*")]
        datasets = top / "datasets"
        for entry in datasets.iterdir() if datasets.is_dir() else ():
            if entry.is_dir() and not (entry / "annotations").is_dir():
                found.append(f"{entry} (dataset folder without annotations)")
    found += [str(p) for p in bench.tmpdir.iterdir() if p.name not in bench.tmp_clean]
    return sorted(set(found))


def new_in_tmp(bench: Bench) -> list[str]:
    """/tmp/bench-benchmark-*.json that appeared during the session. The runs' TMPDIR is
    private (checked above), so these come from other processes on a shared machine."""
    return sorted(set(glob.glob("/tmp/bench-benchmark-*.json")) - bench.tmp_bench_json)


def check_complete(run: RunResult, clean: dict[str, float | None], what: str) -> list[str]:
    """Problems with a run that should have completed: folder, completeness, mAPs."""
    if len(run.run_dirs) != 1:
        return [f"{what}: {len(run.run_dirs)} run folders (rc {run.rc}, log {run.log})"]
    report = report_of(run.run_dirs[0])
    if report is None or not report.get("complete"):
        return [f"{what}: {run.run_dirs[0].name} not complete (rc {run.rc}, log {run.log})"]
    got = maps_of(report)
    if got != clean:
        return [f"{what}: mAPs {got} != clean {clean}"]
    return []


def kill_moments(n: int, rng: random.Random) -> list[float]:
    """n fractions of a run's duration, one uniformly inside each of n equal strata,
    shuffled."""
    moments = [(i + rng.random()) / n for i in range(n)]
    rng.shuffle(moments)
    return moments


def last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:70] if lines else "(no output yet)"


def kill_run(bench: Bench, cache: Path, frac: float, duration: float, clean: dict,
             tally: Tally, cold: bool, after: re.Pattern | None = None
             ) -> tuple[RunResult, float, list[str]]:
    """SIGKILL a run at frac of its expected duration. A run that ends first (the shared
    machine sped up) was a clean run: it is checked, and the kill tried again at frac of
    that run's duration (on an emptied cache again when cold), at most three times."""
    problems: list[str] = []
    for _ in range(3):
        at = frac * duration
        killed = bench.run(cache, kill_at=at, after=after)
        if killed.killed_at_s is not None:
            return killed, at, problems
        tally.ended_first += 1
        problems += check_complete(killed, clean, f"a run that ended before its kill at {at:.1f} s")
        duration = killed.wall_s if after is None else duration / 2
        if cold:
            shutil.rmtree(cache, ignore_errors=True)
    problems.append(f"three runs ended before their kill at {frac:.2f} of their duration")
    return killed, at, problems


def one_kill(bench: Bench, index: int, cache: Path, frac: float, duration: float,
             clean: dict, tally: Tally, cold: bool, after: re.Pattern | None = None) -> float:
    """One kill and its checks; returns the next run's duration."""
    earlier = tree_hashes([*sorted(bench.run_dirs()), bench.baseline])
    killed, at, problems = kill_run(bench, cache, frac, duration, clean, tally, cold, after)
    tally.kills += 1
    tally.cold += cold
    status = ""
    for run_dir in killed.run_dirs:
        report = report_of(run_dir)
        if report is None:
            tally.no_report += 1
            status = "no report.json"
            continue
        rc, why = bench.promote(run_dir)
        complete = bool(report.get("complete")) and listed_files_present(run_dir, report)
        if complete and rc == 0:
            tally.finished_before_kill += 1
            status = "finished writing before the kill (promotable, as it should be)"
            if maps_of(report) != clean:
                problems.append(f"its complete report has mAPs {maps_of(report)} != {clean}")
        elif rc == 0:
            tally.promotable.append(f"kill {index}: {run_dir}")
            problems.append(f"PROMOTABLE: {run_dir}")
        else:
            tally.refused += 1
            status = f"promote refused ({' '.join(why)[:60]})"
    if not killed.run_dirs:
        tally.no_report += 1
        status = "no run folder"
    lost = changed(earlier, tree_hashes([bench.baseline, *sorted(bench.run_dirs())]))
    nxt = bench.run(cache)
    problems += check_complete(nxt, clean, "next run")
    lost += changed(earlier, tree_hashes([bench.baseline, *sorted(bench.run_dirs())]))
    if lost:
        tally.lost += [f"kill {index}: {x}" for x in lost]
        problems += sorted(set(lost))
    if nxt.run_dirs and (report := report_of(nxt.run_dirs[0])) and maps_of(report) != clean:
        tally.map_diffs.append(f"kill {index}: {maps_of(report)}")
    left = leftovers(bench, [cache])
    fresh = [x for x in left if x not in bench.seen_leftovers]
    bench.seen_leftovers.update(left)
    if fresh:
        tally.leftovers += [f"kill {index}: {x}" for x in fresh]
        problems += [f"leftover {x}" for x in fresh]
    if len(left) > len(fresh):
        problems.append(f"({len(left) - len(fresh)} leftovers of earlier kills still there)")
    if not problems:
        tally.survived += 1
    where = "cold" if cold else "warm" if after is None else "writing"
    when = f"{at:5.1f} s" if after is None else f"{at:.2f} s after the last test"
    print(f"kill {index:2d} ({where}) SIGKILL at {when}, last output "
          f"{last_line(killed.log)!r}: {status}; next run {nxt.wall_s:.0f} s: "
          + ("ok" if not problems else "; ".join(problems)), flush=True)
    return nxt.wall_s


def sigterm_check(bench: Bench, cache: Path, clean: dict) -> list[str]:
    """SIGTERM while the second variant runs: a partial run folder, complete: false."""
    before = bench.run_dirs()
    proc, log, t0 = bench.start(cache, verbose=True)
    first = sorted(clean)[0] if "fp32" not in clean else "fp32"
    done = re.compile(rf"test_variant\[{re.escape(first)}\] (PASSED|FAILED|ERROR)")
    try:
        while proc.poll() is None and not done.search(log.read_text(errors="replace")):
            time.sleep(0.05)
        if proc.poll() is None:
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=bench.args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wall = time.monotonic() - t0
    new = sorted(bench.run_dirs() - before)
    problems = []
    if len(new) != 1:
        problems.append(f"{len(new)} run folders after SIGTERM (rc {proc.returncode})")
    else:
        report = report_of(new[0])
        if report is None:
            problems.append(f"no report.json in {new[0]}")
        elif report.get("complete") is not False:
            problems.append(f"report.json complete: {report.get('complete')!r}")
        else:
            rc, why = bench.promote(new[0])
            if rc == 0:
                problems.append(f"PROMOTABLE after SIGTERM: {new[0]}")
            print(f"SIGTERM after {wall:.1f} s (rc {proc.returncode}): {new[0].name} has "
                  f"report.json complete: false with rows {sorted(maps_of(report))}; "
                  f"promote exit {rc} ({' '.join(why)[:80]})")
    left = leftovers(bench, [cache])
    problems += [f"leftover after SIGTERM (before any next run): {x}" for x in left]
    return problems


def concurrent_check(bench: Bench, cache: Path, clean: dict) -> list[str]:
    """Two suites at once into one results folder and one empty cache folder."""
    before = bench.run_dirs()
    started = [bench.start(cache) for _ in range(2)]
    rcs = []
    for proc, _log, _t0 in started:
        try:
            rcs.append(proc.wait(timeout=bench.args.timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rcs.append(proc.wait())
    wall = time.monotonic() - started[0][2]
    new = sorted(bench.run_dirs() - before)
    problems = []
    if len(new) != 2:
        problems.append(f"{len(new)} run folders from two concurrent runs (rc {rcs})")
    maps = []
    for run_dir in new:
        report = report_of(run_dir)
        if report is None or not report.get("complete"):
            problems.append(f"{run_dir.name} not complete")
        else:
            maps.append(maps_of(report))
    if len(maps) == 2 and not (maps[0] == maps[1] == clean):
        problems.append(f"concurrent mAPs {maps} (clean {clean})")
    problems += [f"leftover after the concurrent runs: {x}" for x in leftovers(bench, [cache])]
    print(f"two concurrent runs, one results and one empty cache folder: {wall:.0f} s, "
          f"rc {rcs}, folders {[p.name for p in new]}, mAPs {maps}")
    return problems


def machine_state() -> str:
    load = os.getloadavg()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), "?") \
        if Path("/proc/cpuinfo").exists() else "?"
    return f"{os.cpu_count()} cores ({cpu}), load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    p.add_argument("--cold-kills", type=int, default=3,
                   help="how many of them start on an empty cache (default 3)")
    p.add_argument("--write-kills", type=int, default=0,
                   help="extra SIGKILLs aimed at the run's writing of its folder: within "
                        "--write-window s after the last test's result line (default 0)")
    p.add_argument("--write-window", type=float, default=1.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default="fp32,int8-max")
    p.add_argument("--eval-count", type=int, default=20)
    p.add_argument("--bench-rounds", type=int, default=10)
    p.add_argument("--calib-count", type=int, default=8)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per suite run")
    p.add_argument("--skip-sigterm", action="store_true")
    p.add_argument("--skip-concurrent", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="reliability-"))
    bench = Bench(work, args)
    t_start = time.monotonic()
    print(f"machine: {machine_state()}; work folder {work}", flush=True)
    warm = work / "cache-warm"
    first = bench.run(warm)
    problems = []
    if len(first.run_dirs) != 1 or (report := report_of(first.run_dirs[0])) is None:
        raise SystemExit(f"the first (clean, cold) run wrote no report; see {first.log}")
    clean = maps_of(report)
    bench.tmp_clean = {p.name for p in bench.tmpdir.iterdir()}
    print(f"a clean run leaves in its TMPDIR: {sorted(bench.tmp_clean) or 'nothing'} "
          "(not counted as leftovers)", flush=True)
    rc, why = bench.promote(first.run_dirs[0])
    if rc:
        raise SystemExit(f"cannot promote the clean run: {why}")
    subprocess.run([sys.executable, "-m", "bench.cli", "baseline", "promote",
                    str(first.run_dirs[0]), "--to", str(bench.baseline), "--results",
                    str(bench.results)], cwd=ROOT, env=bench.env, check=True,
                   capture_output=True)
    second = bench.run(warm)
    problems += check_complete(second, clean, "clean warm run")
    print(f"clean runs: cold {first.wall_s:.0f} s, warm {second.wall_s:.0f} s; "
          f"mAPs {clean}; baseline promoted from {first.run_dirs[0].name}", flush=True)
    cold_n = min(args.cold_kills, args.kills)
    rng = random.Random(args.seed)
    cold_at = kill_moments(cold_n, rng)
    warm_at = kill_moments(args.kills - cold_n, rng)
    warm_s = second.wall_s  # follows the machine: the last warm run's duration
    cold_slots = set(round(i * args.kills / cold_n) for i in range(cold_n)) if cold_n else set()
    tally = Tally()
    for index in range(args.kills):
        if index in cold_slots:
            cache = work / f"cache-cold-{index}"
            one_kill(bench, index + 1, cache, cold_at.pop(), first.wall_s, clean, tally,
                     cold=True)
            shutil.rmtree(cache, ignore_errors=True)  # 230 MB of dataset each
        else:
            warm_s = one_kill(bench, index + 1, warm, warm_at.pop(), warm_s, clean, tally,
                              cold=False)
    write_at = kill_moments(args.write_kills, rng)
    for index in range(args.write_kills):
        one_kill(bench, args.kills + index + 1, warm, write_at.pop(), args.write_window, clean,
                 tally, cold=False, after=last_test_done(args.variants))
    if not args.skip_sigterm:
        problems += sigterm_check(bench, warm, clean)
    if not args.skip_concurrent:
        problems += concurrent_check(bench, work / "cache-concurrent", clean)
    remaining = leftovers(bench, [warm])
    if remaining:
        problems.append(f"{len(remaining)} leftovers at the end: {remaining}")
    total = time.monotonic() - t_start
    print()
    print(f"{tally.survived} of {tally.kills} kills survived ({tally.cold} on an empty cache): "
          + ("nothing lost, nothing promotable, mAPs equal, no temporaries"
             if tally.survived == tally.kills else "SEE ABOVE"))
    print(f"  killed runs: {tally.no_report} left no report.json, {tally.refused} refused by "
          f"promote, {tally.finished_before_kill} had finished writing before the kill; "
          f"{tally.ended_first} runs ended before their kill moment and were tried again")
    print(f"  lost {len(tally.lost)}, promotable {len(tally.promotable)}, mAP differences "
          f"{len(tally.map_diffs)}, leftovers {len(tally.leftovers)}")
    for line in tally.lost + tally.promotable + tally.map_diffs + tally.leftovers + problems:
        print(f"  - {line}")
    print(f"other checks: {'all passed' if not problems else f'{len(problems)} problems'}; "
          f"{bench.runs} suite runs in {total / 60:.1f} min; machine now: {machine_state()}")
    print(f"new /tmp/bench-benchmark-*.json during the session (not from these runs, whose "
          f"TMPDIR is private): {new_in_tmp(bench) or 'none'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if tally.survived == tally.kills and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
