"""How attribute values are printed in summaries and explanations: sizes as 1.5 TB, times as
ISO dates with their age, fractions as percentages, names as written in a policy."""

from __future__ import annotations

from typing import Any

from .schema import ATTRIBUTES, Kind
from .units import format_bytes, format_duration, format_fraction, format_time


def kind_of(path: str) -> Kind:
    """The type kind of an attribute path such as 'item.size' (ANY for a metadata key)."""
    obj, _, rest = path.partition(".")
    name = rest.split(".", 1)[0].split("[", 1)[0]
    spec = ATTRIBUTES.get(obj, {}).get(name)
    if spec is None or spec.type.kind is Kind.MAP:
        return Kind.ANY
    return spec.type.kind


def format_value(path: str, value: Any, now: float | None = None) -> str:
    """``value`` of attribute ``path`` the way an operator would write it in a policy."""
    if value is None:
        return "none"
    kind = kind_of(path)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if kind is Kind.BYTES:
            return format_bytes(value)
        if kind is Kind.DURATION:
            return format_duration(value)
        if kind is Kind.FRACTION:
            return format_fraction(value)
        if kind is Kind.TIME:
            text = format_time(value)
            if now is not None:
                ago = now - value
                text += f" ({format_duration(ago)} ago)" if ago >= 0 else \
                    f" (in {format_duration(-ago)})"
            return text
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return value if kind is Kind.ENUM else f'"{value}"'
    return repr(value)
