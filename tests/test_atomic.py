import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.atomic import (
    TMP_PREFIX,
    OutputError,
    atomic_symlink,
    atomic_write,
    atomic_write_text,
    sweep_stale,
)
from bench.errors import BenchError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_final_file_honours_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    path = atomic_write_text(tmp_path / "report.json", "{}")
    assert _mode(path) == expected
    atomic_write_text(path, "{}\n")  # a replacement too
    assert _mode(path) == expected


def test_no_temporary_file_is_left_and_prefix_is_ours(tmp_path):
    seen = []

    def write(handle):
        seen.extend(p.name for p in tmp_path.iterdir())
        handle.write(b"abc")

    atomic_write(tmp_path / "a.bin", write)
    assert seen[0].startswith(TMP_PREFIX + "a.bin.")
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_write_error_names_the_path_and_keeps_the_old_file(tmp_path):
    target = atomic_write_text(tmp_path / "summary.md", "old")

    def write(handle):
        handle.write(b"half")
        handle.flush()
        raise OSError(28, "No space left on device")  # what write(2) raises when full

    with pytest.raises(OutputError) as err:
        atomic_write(target, write)
    assert str(err.value) == f"cannot write {target}: no space left on the device"
    assert isinstance(err.value, BenchError) and isinstance(err.value, OSError)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_a_real_file_size_limit_is_reported_with_the_path(tmp_path):
    # A real OS refusal mid-write (EFBIG under RLIMIT_FSIZE), in a child process.
    target = tmp_path / "big.bin"
    code = (
        "import resource, signal, sys\n"
        "from bench.atomic import atomic_write_bytes, OutputError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        f"    atomic_write_bytes({str(target)!r}, b'x' * 100000)\n"
        "except OutputError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    if not hasattr(__import__("signal"), "SIGXFSZ"):
        pytest.skip("no RLIMIT_FSIZE here")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == f"cannot write {target}: file too large"
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_parent_that_is_a_file_is_named(tmp_path):
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(OutputError, match=f"cannot write {tmp_path}/results/run/report.json"):
        atomic_write_text(tmp_path / "results" / "run" / "report.json", "{}")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            atomic_write_text(folder / "x.json", "{}")
    finally:
        folder.chmod(0o700)


def test_symlink_replaces_and_leaves_no_temporary(tmp_path):
    link = atomic_symlink(tmp_path / "latest", "runs/r1")
    atomic_symlink(link, "runs/r2")
    assert os.readlink(link) == "runs/r2" and [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_sweep_removes_only_old_entries_with_our_prefix(tmp_path):
    old_file = tmp_path / f"{TMP_PREFIX}report.json.1.ab"
    old_dir = tmp_path / f"{TMP_PREFIX}build.2.cd"
    fresh = tmp_path / f"{TMP_PREFIX}x.3.ef"
    spared = tmp_path / f"{TMP_PREFIX}live.4.gh"
    foreign = tmp_path / ".report.json.xyz.tmp"
    for p in (old_file, fresh, spared, foreign):
        p.write_text("x")
    old_dir.mkdir()
    (old_dir / "artifact.onnx").write_text("half")
    past = time.time() - 7200
    for p in (old_file, old_dir, spared, foreign):
        os.utime(p, (past, past))
    removed = sweep_stale(tmp_path, 3600, keep=lambda p: p == spared)
    assert sorted(removed) == sorted([old_file, old_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh.name, spared.name, foreign.name])


def test_sweep_of_a_missing_folder_is_a_no_op(tmp_path):
    assert sweep_stale(tmp_path / "absent") == []


KILLED_WHILE_WRITING = """
import sys, time
from pathlib import Path
from bench.atomic import atomic_write

def write(handle):
    handle.write(b"half a png")
    handle.flush()
    print("writing", flush=True)
    time.sleep(120)

atomic_write(Path(sys.argv[1]) / "pareto.png", write)
"""


def test_a_run_killed_while_writing_its_folder_leaves_nothing_after_the_next_start(tmp_path):
    from bench.run import sweep_results

    run_dir = tmp_path / "runs" / "20261201T000000Z-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.md").write_text("written before the kill")
    live = run_dir / f"{TMP_PREFIX}report.json.{os.getpid()}.0a0b0c0d"  # a writer that runs
    live.write_text("being written")
    child = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_WRITING, str(run_dir)],
                             stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
    assert child.stdout.readline().strip() == "writing"
    child.kill()  # SIGKILL: no handler, no finally
    child.wait()
    child.stdout.close()
    left = [p.name for p in run_dir.iterdir() if p.name.startswith(f"{TMP_PREFIX}pareto.png.")]
    assert len(left) == 1 and left[0].split(".")[-2] == str(child.pid)
    removed = sweep_results(tmp_path)
    assert [p.name for p in removed] == left
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([live.name, "summary.md"])
