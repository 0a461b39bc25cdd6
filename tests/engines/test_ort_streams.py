"""ONNX Runtime's accuracy-pass streams: same outputs as infer(), bit for bit, at once."""

import threading

import numpy as np
import pytest

from bench.engines import ort as ort_engine
from bench.engines.ort import OrtEngine, OrtOptions
from bench.models.default import default_model_path


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, size=(6, 1, 3, 256, 256)).astype(np.float32)


def test_streams_equal_infer_bit_for_bit_when_run_at_once(images):
    with OrtEngine(default_model_path()) as engine:
        expected = [engine.infer(x)["output"] for x in images]
        streams = engine.infer_streams(3)
        assert len(streams) == 3 and all(callable(s) for s in streams)
        got: dict[tuple[int, int], np.ndarray] = {}

        def work(k: int) -> None:
            for i, x in enumerate(images):
                got[k, i] = streams[k](x)["output"]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(got) == 3 * len(images)
    for (_, i), out in got.items():
        assert np.array_equal(out, expected[i])
    # each call's arrays are its own (the accuracy pass then skips its copy)
    assert all(s.fresh_outputs for s in streams)
    assert not any(np.shares_memory(got[k, 0], got[k, 1]) for k in range(3))


def test_one_stream_is_infer_itself_and_sessions_are_reused(monkeypatch):
    with OrtEngine(default_model_path()) as engine:
        assert engine.infer_streams(1) == [engine.infer]
        monkeypatch.setattr(ort_engine, "usable_cores", lambda: 2)
        auto = engine.infer_streams()  # as many as cores, at most MAX_STREAMS
        assert len(auto) == 2
        opened = dict(engine._streams)
        assert len(engine.infer_streams()) == 2 and engine._streams == opened
        monkeypatch.setattr(ort_engine, "usable_cores", lambda: 64)
        assert len(engine.infer_streams()) == OrtEngine.MAX_STREAMS
        # 64 cores over 4 streams: one session per stream, 16 threads each.
        sessions = engine._streams[(4, 16)]
        assert len({id(s) for s in sessions}) == 4
        # 2 cores over 2 streams: one-thread streams share a single session.
        assert len({id(s) for s in engine._streams[(2, 1)]}) == 1
    assert engine._streams == {}


def test_other_devices_keep_one_stream():
    engine = OrtEngine(default_model_path(), device="cuda")  # never activated: no CUDA here
    assert engine.infer_streams(4) == [engine.infer]


def test_the_threads_option_bounds_the_streams(monkeypatch):
    monkeypatch.setattr(ort_engine, "usable_cores", lambda: 16)
    with OrtEngine(default_model_path(), options=OrtOptions(threads=1)) as engine:
        assert engine.infer_streams() == [engine.infer]  # one thread: no second stream
    with OrtEngine(default_model_path(), options=OrtOptions(threads=2)) as engine:
        assert len(engine.infer_streams()) == 2 and (2, 1) in engine._streams
