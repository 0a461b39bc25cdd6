"""Registry entries that name a class by "module:Class", so that listing a registry imports
none of its (often heavy, often optional) modules."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(entry: str | Any) -> Any:
    """The object a "module:attribute" entry names, or the entry itself."""
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        return getattr(importlib.import_module(module), attr)
    return entry
