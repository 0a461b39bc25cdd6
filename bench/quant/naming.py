"""Fresh tensor and node names for graph rewriters."""

from __future__ import annotations


def fresh_name(base: str, taken: set[str]) -> str:
    """base, or base_1, base_2, ... : the first not in taken, which it then joins."""
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name
