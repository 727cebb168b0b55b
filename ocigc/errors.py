"""The error hierarchy. Every error knows its exit code; the CLI maps them in one place.

Exit codes (docs/cli.md, "Exit codes"): 0 ok; 1 error or problems found; 2 usage; 3 lost race after retries;
4 integrity failure (dangling reference); 5 unsafe mount configuration; 75 lock busy;
130 interrupted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_LOST_RACE = 3
EXIT_INTEGRITY = 4
EXIT_UNSAFE_MOUNT = 5
EXIT_LOCK_BUSY = 75
EXIT_INTERRUPTED = 130


class OcigcError(Exception):
    """Base class: a clear, one-line message and an exit code."""

    exit_code = EXIT_ERROR


class UsageError(OcigcError):
    """A bad argument: a malformed reference, duration or option value."""

    exit_code = EXIT_USAGE


def fill_options(message: str, names: dict[str, str]) -> str:
    """``message`` with each ``{option}`` placeholder of ``names`` replaced; any other brace (a file
    name the user gave, ``a{b}.txt``) is left as it is."""
    return re.sub(r"\{(\w+)\}", lambda m: names.get(m.group(1), m.group(0)), message)


class InvalidOption(UsageError):
    """An option of a core call whose value cannot work. ``option`` is the option's field name
    (``concurrency``, ``annotation``, ``subject``); ``problem`` says what is wrong and may name other
    options as ``{field}`` placeholders (``"needs {artifact_type}"``). The core never names a
    command-line flag: ``render`` takes the namer, and the CLI passes one that gives flags
    (``cli/_common.flag_of``: ``--artifact-type``); ``str()`` names the fields in words."""

    def __init__(self, option: str, problem: str, also: tuple[str, ...] = ()) -> None:
        self.option = option
        self.problem = problem
        self.also = also
        super().__init__(self.render(lambda name: name.replace("_", " ")))

    def render(self, name_of: Callable[[str], str]) -> str:
        names = {o: name_of(o) for o in (self.option, *self.also)}
        return f"{name_of(self.option)}: {fill_options(self.problem, names)}"


class UsageHint(UsageError):
    """A usage error whose message points at other options (``{disable_path_validation}``
    placeholders): ``render`` takes the namer as for ``InvalidOption``; ``str()`` words them."""

    def __init__(self, message: str, options: tuple[str, ...]) -> None:
        self.message = message
        self.options = options
        super().__init__(self.render(lambda name: name.replace("_", " ")))

    def render(self, name_of: Callable[[str], str]) -> str:
        return fill_options(self.message, {o: name_of(o) for o in self.options})


class AlreadyExists(UsageError):
    """A file a command would write exists and the command was not told to replace it (the CLI adds
    the option that does)."""


class InvalidDigest(OcigcError):
    """A string that is not ALG:HEX with a supported algorithm and the right hex length."""


class LayoutError(OcigcError):
    """The directory is not a usable OCI image layout (oci-layout or index.json problems)."""


class ManifestError(OcigcError):
    """A manifest or index that cannot be read or parsed."""


class BlobTooLarge(ManifestError):
    """A blob read as a possible manifest is larger than the read limit."""


class ReferenceNotFound(OcigcError):
    """A tag or digest that the layout does not hold."""


class IntegrityError(OcigcError):
    """A referenced blob is missing: the layout has a dangling reference."""

    exit_code = EXIT_INTEGRITY


class UnsafeToModify(OcigcError):
    """The layout cannot be changed safely (unparsable reachable manifest, missing blob, ...)."""


class LostRace(OcigcError):
    """Another writer changed index.json under us and retries ran out."""

    exit_code = EXIT_LOST_RACE


class UnsafeMount(OcigcError):
    """The mount configuration makes locking or deletion unsafe."""

    exit_code = EXIT_UNSAFE_MOUNT


class LockBusy(OcigcError):
    """A conflicting lock is held and --lock-wait ran out."""

    exit_code = EXIT_LOCK_BUSY


class LockLost(OcigcError):
    """Our lease could not be refreshed in time; we stopped before the next destructive step."""

    exit_code = EXIT_LOST_RACE


class TransferError(OcigcError):
    """A registry or network transfer failed."""


class StorageError(OcigcError):
    """An operating-system error reading or writing a layout (EACCES, ENOTDIR, EROFS, ENOSPC, EIO, ...)."""


def printable(text: str) -> str:
    """Control characters (a newline in a file name) as escapes, so that a message stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe_oserror(e: OSError, where: str | None = None) -> str:
    """One line for an OSError: the path it names (else ``where``) and the problem, control characters
    escaped (``/x/blobs: Not a directory``)."""
    def name(f: object) -> str:
        return os.fsdecode(f) if isinstance(f, (bytes, str)) else str(f)

    path = name(e.filename) if e.filename is not None else where
    if e.filename is not None and e.filename2 is not None:
        path = f"{path} -> {name(e.filename2)}"
    problem = e.strerror or str(e) or type(e).__name__
    return printable(f"{path}: {problem}" if path is not None else problem)


def storage_error(e: OSError, where: str | None = None) -> StorageError:
    """``e`` as an ``OcigcError`` (exit 1) with the one-line message of ``describe_oserror``."""
    return StorageError(describe_oserror(e, where))


@contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """An ``OSError`` without a file name raised inside (``os.write``, ``fsync``, ``close``: ENOSPC,
    EIO, EDQUOT) gets ``path``, so that its one line names the file (docs/cli.md, "Output")."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise type(e)(e.errno, e.strerror or os.strerror(e.errno), os.fspath(path)) from e
        raise
