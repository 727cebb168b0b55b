"""Status of a wait the user would otherwise sit through in silence (a lock's settle delay on a
mount), for whoever shows it: the CLI prints one line on stderr when it is a terminal or with
``--verbose`` (docs/cli.md). The library knows nothing of the terminal; with no listener this is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable

#: Waits shorter than this are not worth a line (a local disk's settle is 0.02 s).
SHOWN_FROM = 0.5

_listener: Callable[[str], None] | None = None


def on_status(listener: Callable[[str], None] | None) -> None:
    """Call ``listener`` with every status message (None: nobody listens)."""
    global _listener
    _listener = listener


def waiting(seconds: float, message: str) -> None:
    """Say that the caller is about to wait ``seconds`` for ``message`` (nothing for a short wait)."""
    if _listener is not None and seconds >= SHOWN_FROM:
        _listener(f"{message} ({seconds:g}s)")
