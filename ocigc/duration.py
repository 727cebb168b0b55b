"""Durations as users write them: ``0``, ``90s``, ``30m``, ``2h``, ``7d``, ``1w``, ``1h30m``."""

from __future__ import annotations

import math
import re

from ocigc.errors import UsageError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``text``; a bare number means seconds. UsageError (exit 2) when malformed."""
    t = text.strip().lower()
    if not t:
        raise UsageError(f"empty {what}")
    try:
        value = float(t)
    except ValueError:
        pass
    else:
        if value < 0:
            raise UsageError(f"{what} {text!r} is negative")
        return value
    pos, total = 0, 0.0
    for m in _PART.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t):
        raise UsageError(f"invalid {what} {text!r}: use forms like 0, 90s, 30m, 2h, 7d")
    return total


def format_duration(seconds: float, style: str = "short") -> str:
    """The one duration formatter. ``short``: the largest unit, ``.0`` dropped (``2h``, ``1.5d``:
    policy values, the grace period); ``age``: one decimal always (``2.0h``: ages in plans);
    ``exact``: whole seconds as configured (``0.5s``, ``forever``: mount option values)."""
    if style == "exact":
        return "forever" if math.isinf(seconds) else f"{seconds:g}s"
    seconds = max(0.0, seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            value = seconds / n
            if style == "age" or value != int(value):
                return f"{value:.1f}{unit}"
            return f"{value:.0f}{unit}"
    return f"{seconds:.0f}s"
