"""The Prometheus text exposition format, for the few metric families the dispatcher has."""

from __future__ import annotations

from collections.abc import Iterable

Sample = tuple[str, float]


def label(name: str, value: str) -> str:
    """`{name="value"}` with the value escaped as the format requires."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{{{name}="{escaped}"}}'


def _number(value: float) -> str:
    # Counters print as plain integers, never as 1e+06.
    return str(value) if isinstance(value, int) else repr(float(value))


def family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    """The HELP and TYPE lines of one metric family, then its samples."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)
    return lines
