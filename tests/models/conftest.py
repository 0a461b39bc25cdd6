"""Shared by the interpreter tests: one torch thread, so the op comparisons are quick
and do not fight the other tests for the two cores."""

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
