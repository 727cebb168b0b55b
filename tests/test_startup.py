"""Start-up stays cheap (issue 20, docs/performance.md "Start-up"): what the CLI imports, checked
structurally (never timed). A run imports the module of its own command only and none of the
heavy libraries it does not use; ``--version`` and ``--help`` are answered before typer is
imported, from the command table, which must agree with what the command modules register; the
plain coercion that stands in for typer's pydantic adapters gives what they give.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cli import OCIGC, run

#: Never imported by any of the commands below, nor by building every command (``--help`` of each).
HEAVY = ["networkx", "oras", "requests", "boto3", "botocore", "tomllib", "rich", "pydantic", "importlib.metadata",
         "ocigc.retention", "ocigc.transfer.migrate", "ocigc.transfer.registry"]
#: The modules of the commands (a run imports its own only).
COMMAND_MODULES = ["ocigc.cli.read", "ocigc.cli.check", "ocigc.cli.doctor", "ocigc.cli.exec", "ocigc.cli.maintain",
                   "ocigc.cli.pushpull", "ocigc.cli.migrate", "ocigc.cli.copy", "ocigc.cli.login", "ocigc.cli.policy",
                   "ocigc.cli.locks", "ocigc.cli.trash", "ocigc.cli.content"]


def _modules(code: str, *args: str) -> set[str]:
    """``sys.modules`` after running ``code`` in a fresh interpreter (with this checkout on the path)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    probe = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    p = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, timeout=120,
                       check=False)
    assert p.returncode == 0, p.stderr
    return set(json.loads(p.stdout.splitlines()[-1]))


def _loaded(modules: set[str], names: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_importing_the_cli_imports_no_command_and_no_library() -> None:
    mods = _modules("import ocigc.cli")
    library = ["ocigc.layout", "ocigc.gc", "ocigc.storage", "ocigc.lock"]
    assert _loaded(mods, ["typer", "click", *HEAVY, *COMMAND_MODULES, *library]) == []
    # the app itself: typer, but still no command module and nothing heavy
    mods = _modules("from ocigc.cli import app\nimport typer.main\ntyper.main.get_command(app)")
    assert "typer" in mods
    assert _loaded(mods, [*HEAVY, *COMMAND_MODULES, "ocigc.gc", "ocigc.lock"]) == []


def test_building_every_command_imports_nothing_heavy() -> None:
    """What ``ocigc CMD --help`` needs of each command module: its commands, not the library they call."""
    mods = _modules("""
        import typer.main
        from ocigc.cli import app
        from ocigc.cli.commands import COMMANDS
        group = typer.main.get_command(app)
        for name in COMMANDS:
            assert group.get_command(None, name) is not None, name
    """)
    assert set(COMMAND_MODULES) <= mods
    assert _loaded(mods, HEAVY) == []


@pytest.mark.parametrize(("argv", "also_absent"), [
    (["tags"], ["ocigc.layout.graph", "ocigc.gc", "ocigc.lock"]),
    (["ls"], ["ocigc.gc", "ocigc.lock"]),
    (["check"], ["ocigc.lock", "ocigc.gc.plan"]),
    (["sweep", "--dry-run"], ["ocigc.lock"]),
], ids=["tags", "ls", "check", "sweep-dry-run"])
def test_a_command_imports_its_own_module_only(tmp_path: Path, argv: list[str], also_absent: list[str]) -> None:
    layout = tmp_path / "empty"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    mods = _modules("""
        import sys
        from ocigc.cli import main
        sys.argv = ["ocigc", *sys.argv[1:]]
        try:
            main()
        except SystemExit as e:
            assert e.code in (0, None), e.code
    """, *argv, str(layout))
    own = {"tags": "ocigc.cli.read", "ls": "ocigc.cli.read", "check": "ocigc.cli.check",
           "sweep": "ocigc.cli.maintain"}[argv[0]]
    assert own in mods
    others = [m for m in COMMAND_MODULES if m != own and not (own == "ocigc.cli.check" and m == "ocigc.cli.read")
              and not (own == "ocigc.cli.maintain" and m in ("ocigc.cli.policy", "ocigc.cli.read"))]
    assert _loaded(mods, [*HEAVY, *others, *also_absent]) == []


def test_version_and_help_are_answered_before_typer_is_imported() -> None:
    for flag in (["--version"], ["--help"], ["-h"]):
        mods = _modules("""
            import sys
            from ocigc.cli import main
            sys.argv = ["ocigc", *sys.argv[1:]]
            main()
        """, *flag)
        assert _loaded(mods, ["typer", "click", "ocigc.cli.app"]) == [], flag


def test_the_command_table_is_what_the_modules_register() -> None:
    import typer.main

    from ocigc.cli import app
    from ocigc.cli.commands import COMMANDS

    for module in COMMAND_MODULES:
        __import__(module)
    group = typer.main.get_group(app)
    assert list(group.commands) and set(group.commands) == set(COMMANDS)
    registered = {info.name: info.callback.__module__ for info in app.registered_commands if info.callback}
    registered.update({info.name: info.typer_instance.registered_commands[0].callback.__module__  # type: ignore[union-attr]
                       for info in app.registered_groups})
    for name, command in group.commands.items():
        module, short = COMMANDS[name]
        assert registered[name] == module, name
        assert " ".join((command.help or "").split("\n\n")[0].split()) == short, name


def test_the_root_options_are_the_ones_the_help_shows() -> None:
    import typer.main

    from ocigc.cli import app
    from ocigc.cli.commands import ROOT_OPTIONS

    group = typer.main.get_command(app)
    ctx = group.make_context("ocigc", ["--version"], resilient_parsing=True)
    records = [p.get_help_record(ctx) for p in group.get_params(ctx)]
    assert [(term, " ".join(text.split())) for term, text in records if term] == \
        [(term, " ".join(text.split())) for term, text in ROOT_OPTIONS]


def test_help_is_the_same_text_on_both_paths() -> None:
    from ocigc.cli.commands import COMMANDS, root_help

    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    fast = subprocess.run([OCIGC, "--help"], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert fast.stdout == root_help(78)  # click's width: at most 80 columns, less 2
    env["COLUMNS"] = "60"
    narrow = subprocess.run([OCIGC, "-h"], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert narrow.stdout == root_help(58)
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 58
    in_process = run(["-h"])  # typer's path: CliRunner renders at 80 columns
    assert in_process.stdout == root_help(80)
    for name in COMMANDS:
        assert f"\n  {name} " in fast.stdout
    version = subprocess.run([OCIGC, "--version"], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert version.stdout == run(["--version"]).stdout


class _Param:
    """What a coercion reads of its parameter."""

    multiple = False
    nargs = 1
    name = "x"


@pytest.mark.parametrize(("annotation", "low", "high"), [(int, 1, 256), (int, None, None), (str, None, None),
                                                         (bool, None, None)])
def test_plain_coercion_gives_what_typer_gives(annotation: Any, low: int | None, high: int | None) -> None:
    """The same values and the same messages as typer's pydantic coercion (where typer has one)."""
    coercion = pytest.importorskip("typer._coercion")
    from typer.models import OptionInfo

    from ocigc.cli.lazy import PlainValue

    info = OptionInfo(min=low, max=high)
    theirs = coercion.build_runtime_param(coercion.resolve_type_descriptor(annotation, info))
    ours = PlainValue(annotation, low, high)
    values: list[Any] = ["5", " 7 ", "1.0", "1.", "1.5", "x", "0", "300", "", "1e3", "-3", "+4", "1_000", "1__0",
                         "_1", "0x10", "01", "\uff10", "true", "No", "on", "yes ", "t", "F", "2", 5, 2.0, 2.5, True,
                         None, "é"]
    for value in values:
        got = []
        for coerce in (theirs, ours):
            try:
                got.append(("value", coerce.coerce(value, param=_Param(), ctx=None)))
            except Exception as e:
                got.append(("error", type(e).__name__, getattr(e, "message", str(e))))
        assert got[0] == got[1], (annotation, value)


def test_bad_values_are_usage_errors_with_typer_s_messages() -> None:
    r = run(["ls", "--jobs", "0", "."])
    assert r.code == 2 and "Input should be greater than or equal to 1" in r.stderr
    r = run(["ls", "--jobs", "many", "."])
    assert r.code == 2 and "Input should be a valid integer" in r.stderr
    r = run(["ls", "-j", "300", "."])
    assert r.code == 2 and "Input should be less than or equal to 256" in r.stderr


@pytest.mark.parametrize("argv", [["manifest", "fetch", "-o", "m.json"], ["discover"]],
                         ids=["manifest-fetch", "discover"])
def test_the_oras_verbs_on_a_layout_load_no_registry_client(tmp_path: Path, argv: list[str]) -> None:
    """``manifest fetch`` and ``discover`` of a layout: oras-py, requests and the registry client stay
    unloaded (they are imported on the registry path only)."""
    (tmp_path / "f").write_text("x\n")
    assert run(["push", f"{tmp_path / 'L'}:v1", "f"], cwd=tmp_path).code == 0
    mods = _modules("""
        import sys
        from ocigc.cli import main
        sys.argv = ["ocigc", *sys.argv[1:]]
        try:
            main()
        except SystemExit as e:
            assert e.code in (0, None), e.code
    """, *[str(tmp_path / a) if a == "m.json" else a for a in argv], f"{tmp_path / 'L'}:v1")
    assert "ocigc.cli.content" in mods
    assert _loaded(mods, ["oras", "requests", "ocigc.transfer.registry", "ocigc.transfer.migrate",
                          "ocigc.cli.maintain", "ocigc.cli.pushpull"]) == []
