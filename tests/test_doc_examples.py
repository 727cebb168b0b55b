"""Every command example in README.md and docs/*.md is real output (issue 18, item 26): each
``$ ocigc ...`` block runs on a fixture world and must print what the page shows (times, ages,
run ids and hex digits normalised, ``...`` for omitted lines), in 80 columns; every other ocigc
command line in a code block must parse. ``python -m tests.kit.doc_examples --update`` rewrites
the outputs after a deliberate change."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.kit.doc_examples import (
    Example,
    build_world,
    command_lines,
    doc_files,
    examples,
    matches,
    normalize,
    parse_command,
    run_example,
)

ALL = [ex for path in doc_files() for ex in examples(path)]
RUN = [ex for ex in ALL if ex.skip is None]
LINES = [(path, n, cmd) for path in doc_files() for n, cmd in command_lines(path)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("docs") / "world")


def test_the_pages_have_examples_and_few_are_not_run() -> None:
    assert len(RUN) >= 8, [ex.where for ex in RUN]
    skipped = [ex for ex in ALL if ex.skip is not None]
    assert len(skipped) <= 4, [(ex.where, ex.skip) for ex in skipped]
    assert len(LINES) >= 30


@pytest.mark.parametrize("example", RUN, ids=lambda ex: ex.where)
def test_example_prints_what_the_page_shows(example: Example, world: Path, tmp_path: Path) -> None:
    _, actual = run_example(example, world, tmp_path)
    if not matches(example.expected, actual):
        diff = "\n".join(difflib.unified_diff(normalize(example.expected), normalize(actual), "page", "ocigc",
                                              lineterm=""))
        pytest.fail(f"{example.where}: the output of `{example.command}` drifted "
                    f"(python -m tests.kit.doc_examples --update):\n{diff}")
    # human output fits 80 columns; an error or warning is one line whatever its length, push's
    # "Digest:" line carries the whole digest (as oras prints it), and a JSON document printed as it
    # is (manifest fetch) keeps its whole digests
    long = [line for line in actual if len(line) > 80 and not line.startswith(("error:", "warning:", "Digest:"))
            and not line.lstrip().startswith('"')]
    assert not long, long


@pytest.mark.parametrize(("path", "line", "command"), LINES, ids=[f"{p.name}:{n}" for p, n, _ in LINES])
def test_every_command_line_of_the_pages_parses(path: Path, line: int, command: str) -> None:
    parse_command(command)
