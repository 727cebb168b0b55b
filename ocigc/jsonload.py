"""The one way ocigc parses JSON it read from storage: bounded in size and in nesting depth.

Everything a layout holds may be hostile (``docs/design.md``, "Bad input"): a lock file of 60,000
``[`` must not raise ``RecursionError``, an ``index.json`` that never ends must not exhaust memory.
``load_json`` refuses input over a size cap and nesting deeper than ``MAX_JSON_DEPTH`` with a
``JSONInputError`` (a ``ValueError``) whose message names the problem; the caller adds the path.
"""

from __future__ import annotations

import json
from typing import Any

#: Deepest nesting of arrays and objects accepted. OCI documents nest a handful of levels (an index's
#: manifests' platform's features); annotations are flat string maps.
MAX_JSON_DEPTH = 128
#: Default size cap of a JSON document ocigc reads (lock files, journal and trash records).
MAX_SMALL_JSON_BYTES = 1024 * 1024


class JSONInputError(ValueError):
    """JSON that ocigc refuses to use: invalid, too large or nested too deeply. The message names the
    problem only (``invalid JSON (...)``); callers prefix the path."""


def load_json(raw: bytes | str, limit: int | None = MAX_SMALL_JSON_BYTES, depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse ``raw``; ``JSONInputError`` when it is larger than ``limit`` bytes, not JSON, not UTF-8, or
    nested deeper than ``depth``.

    Callers read with ``Storage.read_bytes(rel, limit=...)`` (at most ``limit + 1`` bytes), so an
    endless file is cut there and refused here."""
    if limit is not None and len(raw) > limit:
        raise JSONInputError(f"larger than {limit} bytes")
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise JSONInputError(f"nested deeper than {depth} levels") from None
    except UnicodeDecodeError as e:
        raise JSONInputError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise JSONInputError(f"invalid JSON ({e.msg}: line {e.lineno} column {e.colno})") from None
    except ValueError as e:
        raise JSONInputError(f"invalid JSON ({e})") from None
    if _openers(raw) > depth and _too_deep(doc, depth):
        raise JSONInputError(f"nested deeper than {depth} levels")
    return doc


def _openers(raw: bytes | str) -> int:
    """An upper bound of the nesting depth (``[`` and ``{`` anywhere, strings included): when it is
    within the limit, the walk is skipped."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{")
    return raw.count(b"[") + raw.count(b"{")


def _too_deep(doc: Any, depth: int) -> bool:
    """Whether arrays and objects nest deeper than ``depth`` (an iterative walk: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if level > depth:
            return True
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return False
