"""One base error with a few kinds.

A message names the thing (option, file, tensor), the value received and what was
expected, in one line, so that a failed variant row or a CLI error reads on its own.
"""


class BenchError(Exception):
    """Base of every error the harness raises on purpose."""

    kind = "error"


class ConfigError(BenchError):
    """An option, environment variable or [tool.bench] key has a bad value."""

    kind = "config"


class InputDataError(BenchError):
    """A dataset, image, annotation file or calibration set is unusable."""

    kind = "input"


class ModelError(BenchError):
    """A model file is missing, corrupt, or has a shape or op we cannot handle."""

    kind = "model"


class EngineUnavailable(BenchError):
    """A runtime (TensorRT, CUDA, a power source) is not present on this machine."""

    kind = "unavailable"



def first_line(exc: BaseException) -> str:
    """The first line of an error's message, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """An error as one line for a failed row or the CLI: the kind, then the first line."""
    text = first_line(exc)
    kind = type(exc).__name__
    return f"{kind}: {text}" if text != kind else kind
