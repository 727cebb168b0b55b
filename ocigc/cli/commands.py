"""The command table of the CLI and its top-level help, without importing typer or any command.

A run imports only the module of the command it runs (``ocigc.cli.lazy``): the table says which
module registers each command. ``ocigc --help`` and ``ocigc --version`` are answered from here
alone (``ocigc.cli.main``), before typer is imported: the same text typer prints for
``ocigc -h`` in-process (``LazyGroup.format_help`` renders it with ``root_help``).
tests/test_startup.py checks the table against the commands the modules register, their help and the
root options.
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap

#: The first line of ``ocigc --help`` (also the app's ``help``).
SUMMARY = ("Registry upkeep for OCI image layouts on object storage: delete, sweep, check, locks, push, pull, "
           "attach, migrate.")

EPILOG = (
    "Exit codes: 0 ok; 1 error or problems found; 2 usage; 3 lost race after retries; "
    "4 integrity failure (dangling reference); 5 unsafe mount configuration; 75 lock busy; 130 interrupted."
)

#: Command name -> (the module that registers it, its short help: the first paragraph of its own help).
COMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("ocigc.cli.read", "List every layout under ROOT: tags, manifests, blobs, bytes and unreachable bytes."),
    "tags": ("ocigc.cli.read", "List the tags of a layout with their digests, types and sizes."),
    "inspect": ("ocigc.cli.read", "Show the tree under a tag or digest: index -> manifests -> config/layers, "
                                  "and referrers."),
    "graph": ("ocigc.cli.read", "Print the reference graph of a layout (JSON, Graphviz dot or GraphML)."),
    "check": ("ocigc.cli.check", "Check layouts: missing blobs, sizes, JSON, media types, stray and temp files, "
                                 "digests."),
    "doctor": ("ocigc.cli.doctor", "Name the adapter of the mount holding PATH, check its cache and write "
                                   "options, and run a self-test."),
    "exec": ("ocigc.cli.exec", "Run CMD (oras push --oci-layout LAYOUT:TAG ...) holding LAYOUT's locks, "
                               "then check the layout."),
    "delete": ("ocigc.cli.maintain", "Delete tags or manifests, their referrers, and every blob no remaining "
                                     "root reaches."),
    "sweep": ("ocigc.cli.maintain", "Remove blobs no index.json entry reaches (and old leftovers of writers), "
                                    "layout by layout."),
    "push": ("ocigc.cli.pushpull", "Push files to a layout as an oras artifact (the layout is created when "
                                   "missing)."),
    "pull": ("ocigc.cli.pushpull", "Pull an artifact's titled files into DIR; directories are unpacked."),
    "attach": ("ocigc.cli.content", "Attach files to a manifest as a referrer (its subject), as oras attach "
                                    "writes it."),
    "discover": ("ocigc.cli.content", "List the referrers of a manifest, and theirs, recursively (as oras "
                                      "discover)."),
    "manifest": ("ocigc.cli.content", "Fetch or delete one manifest (as oras manifest fetch|delete)."),
    "blob": ("ocigc.cli.content", "Fetch or delete one blob (as oras blob fetch|delete)."),
    "tag": ("ocigc.cli.pushpull", "Add tags to an existing manifest (a tag already on another manifest moves)."),
    "migrate": ("ocigc.cli.migrate", "Copy every repository and tag (untagged entries, referrers, all platforms) "
                                     "between layouts and registries; manifests go byte for byte, so every "
                                     "digest is kept."),
    "cp": ("ocigc.cli.copy", "Copy one tag or digest (all platforms; with -r its referrers) between layouts "
                             "(local, mounted, s3://) and registries; manifests go byte for byte, so digests are "
                             "kept."),
    "login": ("ocigc.cli.login", "Log in to a registry: check the credentials against it, then save them as oras "
                                 "login does."),
    "logout": ("ocigc.cli.login", "Forget a registry's credentials (the config's auths entry and the credential "
                                  "helper's)."),
    "policy": ("ocigc.cli.policy", "Retention policies (TOML files for sweep --policy): check and explain."),
    "locks": ("ocigc.cli.locks", "See and break the lock files of layouts (.ocigc/locks/)."),
    "trash": ("ocigc.cli.trash", "See, undo or empty what delete/sweep --trash moved aside (.ocigc/trash/)."),
}

#: Commands with a ``--format`` of their own (json among its values); on every other command
#: ``--format json`` is ``--json`` (``format_alias``), as oras spells it.
OWN_FORMAT = {"graph", "discover"}
#: Options of ``ocigc`` itself that take a value (skipped when looking for the command's name).
_ROOT_VALUED = {"--endpoint-url", "--via"}


def format_alias(argv: list[str]) -> list[str]:
    """``argv`` with ``--format json`` (or ``--format=json``) as ``--json`` for the commands that
    have ``--json`` and no ``--format`` of their own; nothing after ``--`` changes (``exec``'s command)."""
    command = None
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] in _ROOT_VALUED:
            i += 2
            continue
        if not argv[i].startswith("-"):
            command = argv[i]
            break
        i += 1
    if command is None or command in OWN_FORMAT:
        return argv
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg == "--format=json":
            out.append("--json")
        elif arg == "--format" and i + 1 < len(argv) and argv[i + 1] == "json":
            out.append("--json")
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


#: The options of ``ocigc`` itself as ``--help`` shows them (``ocigc.cli.app.root`` defines them).
ROOT_OPTIONS: list[tuple[str, str]] = [
    ("-q, --quiet", "Only errors on stderr; no progress bars."),
    ("-v, --verbose", "More detail (repeatable: -vv); also full digests, as --wide."),
    ("--endpoint-url URL", "S3 endpoint for s3:// locations (S3-compatible stores; default: AWS_ENDPOINT_URL "
                           "or AWS).  [env var: OCIGC_ENDPOINT_URL]"),
    ("--via auto|mount|api", "A layout on a mounted bucket: through the bucket's API when it is found and answers "
                             "conditional writes (auto, the default), always through the mount, or always through "
                             "the API.  [env var: OCIGC_VIA]"),
    ("--version", "Print the version and exit."),
    ("-h, --help", "Show this message and exit."),
]


def help_width() -> int:
    """The width click gives help text: the terminal's (``COLUMNS`` first), at most 80, minus 2, at least 50."""
    columns = 0
    with contextlib.suppress(ValueError):
        columns = int(os.environ.get("COLUMNS", "0"))
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return max(min(columns or 80, 80) - 2, 50)


def _paragraph(text: str, width: int, indent: int) -> list[str]:
    return [" " * indent + line for line in textwrap.wrap(text, width - indent)]


def _definitions(rows: list[tuple[str, str]], width: int, indent: int = 2, col_max: int = 30,
                 spacing: int = 2) -> list[str]:
    """Rows as click's ``write_dl`` lays them out: terms in a column, each text wrapped beside it."""
    first_col = min(max(len(term) for term, _ in rows), col_max) + spacing
    text_width = max(width - first_col - 2, 10)
    out: list[str] = []
    for term, text in rows:
        lines = textwrap.wrap(text, text_width) or [""]
        pad = " " * (first_col + indent)
        if len(term) <= first_col - spacing:
            out.append(" " * indent + term.ljust(first_col) + lines[0])
        else:
            out.append(" " * indent + term)
            out.append(pad + lines[0])
        out.extend(pad + line for line in lines[1:])
    return out


def root_help(width: int) -> str:
    """``ocigc --help``: usage, summary, options, every command with its short help, exit codes."""
    lines = ["Usage: ocigc [OPTIONS] COMMAND [ARGS]...", "", *_paragraph(SUMMARY, width, 2), "", "Options:",
             *_definitions(ROOT_OPTIONS, width), "", "Commands:",
             *_definitions([(name, text) for name, (_, text) in COMMANDS.items()], width), "",
             *_paragraph(EPILOG, width, 2)]
    return "\n".join(lines) + "\n"
