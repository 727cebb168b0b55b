"""``LazyGroup``: the root command group, which imports a command's module only when that command
runs (or its help is shown): ``ocigc tags`` does not import the modules of ``push``, ``sweep`` or
``migrate``, nor what they import.

It also gives the parameters of plain types (``str``, ``bool``, ``int`` with a range, lists of ``str``)
a coercion of their own where typer would build one with pydantic: typer (from 0.2x) coerces every
value through a pydantic ``TypeAdapter``, and importing pydantic and building the adapters cost about
0.1 s per run, more than the rest of a small command. The values and the messages of a bad value are
the ones typer gives (tests/test_startup.py); other types (enums, paths, files) keep typer's coercion.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import typer
import typer.core
import typer.main

from ocigc.cli.commands import COMMANDS, root_help


class LazyGroup(typer.core.TyperGroup):
    """The commands of ``COMMANDS``, each built from its module when first asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name][0])  # registers its commands on the app
            command = self.commands[cmd_name] = _build(cmd_name)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The root help from the command table (``ocigc.cli.commands``): no command module imported."""
        formatter.write(root_help(formatter.width or 78))


def _build(name: str) -> Any:
    """The command (or command group) ``name`` registered on the app, built as typer builds it: by a
    Typer holding it alone, so that its module's other commands (and those of modules it imports)
    are not built (each costs a signature and its type hints)."""
    from ocigc.cli.app import app

    one = typer.Typer(rich_markup_mode=app.rich_markup_mode, pretty_exceptions_short=app.pretty_exceptions_short,
                      add_completion=False)
    one.registered_commands = [c for c in app.registered_commands if c.name == name]
    one.registered_groups = [g for g in app.registered_groups if g.name == name]
    if len(one.registered_commands) + len(one.registered_groups) != 1:
        return typer.main.get_group(app).commands.get(name)  # not registered by that name: as typer would
    return typer.main.get_group(one).commands.get(name)


class PlainValue:
    """Coerces a command-line value to ``str``, ``bool``, ``int`` (within ``min``..``max``), or a list of
    ``str``, as typer's pydantic adapters do."""

    def __init__(self, annotation: Any, minimum: float | None = None, maximum: float | None = None) -> None:
        self.annotation = annotation
        self.minimum = minimum
        self.maximum = maximum

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        if multi:
            if isinstance(value, str):
                raise typer.BadParameter("Value must be an iterable.", ctx=ctx, param=param)
            items = value if isinstance(value, (list, tuple)) else [value]
            return [self._one(v, param, ctx) for v in items]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Any) -> Any:
        if self.annotation is str:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if self.annotation is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, (str, int)):
                raise typer.BadParameter("Input should be a valid boolean", ctx=ctx, param=param)
            word = str(value).strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise typer.BadParameter("Input should be a valid boolean, unable to interpret input", ctx=ctx,
                                     param=param)
        number = _integer(value)
        if number is None:
            why = "got a number with a fractional part" if isinstance(value, float) else \
                "unable to parse string as an integer"
            raise typer.BadParameter(f"Input should be a valid integer, {why}", ctx=ctx, param=param)
        if self.minimum is not None and number < self.minimum:
            raise typer.BadParameter(f"Input should be greater than or equal to {self.minimum}", ctx=ctx,
                                     param=param)
        if self.maximum is not None and number > self.maximum:
            raise typer.BadParameter(f"Input should be less than or equal to {self.maximum}", ctx=ctx, param=param)
        return number


#: The words pydantic takes for a boolean (and an empty value: false, as typer has it).
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"", "0", "off", "f", "false", "n", "no"}


def _integer(value: Any) -> int | None:
    """An integer as pydantic's lax mode reads one: an int, a float without a fraction, or ASCII digits
    (sign, underscores between digits, and a fraction of zeros allowed) between spaces."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    match = _INTEGER(str(value).strip())
    return int(match.group(1)) if match is not None else None


_INTEGER = re.compile(r"([+-]?[0-9](?:_?[0-9])*)(?:\.0+)?").fullmatch


def plain_value(param: Any) -> PlainValue | None:
    """The coercion of ``param`` when its type is plain (and nothing else shapes its value), else None."""
    descriptor = param.type_descriptor
    info = descriptor.parameter_info
    if (descriptor.file_annotation is not None or getattr(info, "parser", None) is not None
            or getattr(info, "clamp", False)):
        return None
    annotation = descriptor.annotation
    if annotation is str or annotation == list[str]:
        return PlainValue(str)
    if annotation is bool:
        return PlainValue(bool)
    if annotation is int:
        return PlainValue(int, info.min, info.max)
    return None


def _install_plain_coercion() -> None:
    """Make typer's parameters (from 0.2x, with runtime coercion) ask ``plain_value`` first."""
    parameter = getattr(typer.core, "_TyperParameter", None)
    typer_coercion = getattr(parameter, "get_runtime_param", None)
    if parameter is None or typer_coercion is None or getattr(typer_coercion, "ocigc_plain", False):
        return

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            self._runtime_param = plain_value(self)
        return self._runtime_param if self._runtime_param is not None else typer_coercion(self)

    get_runtime_param.ocigc_plain = True  # type: ignore[attr-defined]
    parameter.get_runtime_param = get_runtime_param


_install_plain_coercion()
