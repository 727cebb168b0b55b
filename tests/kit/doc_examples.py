"""The command examples of README.md and docs/*.md, run on a fixture world (issue 18, item 26).

An *example* is a code block line ``$ ocigc ARGS`` followed by the output it shows (in a 4-space
indented block, up to the block's end; in a fenced block, up to the next ``$`` line or the fence).
``run_example`` runs it in a fresh copy of ``build_world``'s directory (cwd, ``COLUMNS=80``, stdout
and stderr merged) and ``matches`` compares after ``normalize`` (times, ages, run ids, hex digits:
each becomes a placeholder of its own length, so a digest shown as ``sha256:977c…`` where ocigc
prints ``sha256:977c6cf8e8ae`` still differs). A line ``...`` in the expected output stands for any
lines. A block preceded by ``<!-- example not run: REASON -->`` is not run (it needs an s3fs mount,
a registry, another host's lock).

Every other command line in a code block (``ocigc ...``, a crontab or systemd ``ExecStart`` line) must
at least parse: ``parse_command`` resolves the command and its options without running it.

    python -m tests.kit.doc_examples --update   # rewrite the examples' output from real runs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.kit.cli import OCIGC, cli_env
from tests.kit.layouts import OCI_LAYER, LayoutBuilder, blob_path
from tests.kit.retention import CREATED
from tests.kit.tree import age

REPO = Path(__file__).resolve().parents[2]
SKIP = re.compile(r"<!--\s*example not run:\s*(.+?)\s*-->")
WILDCARD = "..."


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass
class Example:
    file: Path
    line: int  # 1-based, the "$ ocigc" line
    command: str
    expected: list[str]
    #: Lines of the file holding the expected output: [first, end) (0-based), and their indent.
    span: tuple[int, int]
    indent: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def _skip_reason(lines: list[str], first: int) -> str | None:
    i = first - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i >= 0 and lines[i].strip().startswith("```"):  # the marker goes above the fence
        i -= 1
        while i >= 0 and not lines[i].strip():
            i -= 1
    m = SKIP.search(lines[i]) if i >= 0 else None
    return m.group(1) if m else None


def examples(path: Path) -> list[Example]:
    lines = path.read_text().splitlines()
    out: list[Example] = []
    fence_start: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            fence_start = None if fence_start is not None else i
            i += 1
            continue
        if fence_start is not None and line.startswith("$ ocigc "):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("$ ") and not lines[j].strip().startswith("```"):
                j += 1
            out.append(Example(path, i + 1, line[2:], lines[i + 1:j], (i + 1, j), "",
                               _skip_reason(lines, fence_start if i == fence_start + 1 else i)))
            i = j
            continue
        if fence_start is None and line.startswith("    $ ocigc "):
            j = i + 1
            while j < len(lines) and lines[j].startswith("    ") and not lines[j].startswith("    $ "):
                j += 1
            out.append(Example(path, i + 1, line[6:], [x[4:] for x in lines[i + 1:j]], (i + 1, j), "    ",
                               _skip_reason(lines, i)))
            i = j
            continue
        i += 1
    return out


def command_lines(path: Path) -> list[tuple[int, str]]:
    """Every ocigc command line in a code block (examples, crontab and systemd lines), joined across
    ``\\`` continuations, with its line number."""
    lines = path.read_text().splitlines()
    out: list[tuple[int, str]] = []
    fence = False
    i = 0
    while i < len(lines):
        raw = lines[i]
        if raw.strip().startswith("```"):
            fence = not fence
            i += 1
            continue
        code = fence or raw.startswith("    ")
        text = raw.strip()
        start = i
        while text.endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        i += 1
        if not code:
            continue
        text = text.removeprefix("$ ")
        m = re.search(r"(?:^|[\s=/])ocigc\s+(.*)$", text)
        if m is None or text.startswith(("#", "pip ", "python")) or "ocigc." in text.split()[0]:
            continue
        if not re.match(r"^(\S*/)?ocigc\s|^\*/|^ExecStart=|^\d|^\*", text) or "[--" in text:
            continue  # not a command line, or a synopsis (ocigc migrate SRC DST [--dry-run] ...)
        out.append((start + 1, "ocigc " + m.group(1)))
    return out


def parse_command(command: str) -> None:
    """Resolve ``ocigc ARGS`` to its command and parse its options without running it; raises the
    usage error (a click exception) when it does not parse."""
    from typer.main import get_command

    from ocigc.cli import app

    args = [a for a in shlex.split(command, comments=True)[1:] if not a.startswith(("2>", ">"))]
    group = get_command(app)
    ctx = group.make_context("ocigc", list(args))
    cmd, parent = group, ctx
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    while hasattr(cmd, "resolve_command"):  # a group: the command (and a sub-group's command) by name
        assert rest, f"no command in {command!r}"
        name, sub, rest = cmd.resolve_command(parent, rest)
        assert sub is not None and name is not None, f"no command {name!r} in {command!r}"
        parent = sub.make_context(name, list(rest), parent=parent)
        cmd = sub
        rest = [*getattr(parent, "_protected_args", []), *parent.args]


# --- the world the examples run in ---------------------------------------------------------------------


HOUR = 3600.0
DAY = 86400.0
#: The team/app story's times count back from this fixed instant (2026-01-01), so that its manifests,
#: and the order of a plan, are the same on every build; ages (relative to now) are normalised.
BASE = 1767225600.0


def _created(days: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE - days * DAY))


def build_world(root: Path) -> Path:
    """``s3/hello`` (an artifact and its signature, a multi-platform index with referrers, an image,
    garbage old and young, a foreign file), ``s3/team/app`` (the retention story of docs/retention.md),
    the policies ``ocigc.toml`` and ``bad.toml``, and ``hello.txt`` and ``docs/`` to push. Digests are
    the same on every build; times are relative to now."""
    root.mkdir(parents=True, exist_ok=True)
    hello = LayoutBuilder(root / "s3" / "hello")
    latest = hello.manifest([b"hi\n"], config=b"{}", artifact_type="application/vnd.example.greeting")
    hello.add(latest, "latest")
    sig = hello.referrer(latest, b"signature of latest")
    hello.add(sig)
    v1 = hello.manifest([b"v1 layer"])
    hello.add(v1, "v1")
    amd64 = hello.manifest([b"\0" * 10240], config=b'{"architecture":"amd64","os":"linux"}')
    arm64 = hello.manifest([b"\1" * 10240], config=b'{"architecture":"arm64","os":"linux"}')
    multi = hello.index([{k: d[k] for k in ("mediaType", "digest", "size")} for d in (amd64, arm64)])
    hello.add(multi, "multi")
    hello.add(hello.referrer(amd64, b"sbom of amd64", "application/spdx+json"))
    hello.add(hello.referrer(multi, b"signature of multi"))
    hello.save()
    garbage = hello.blob(b"an unreachable layer of an image deleted long ago" * 2, OCI_LAYER)
    young = hello.blob(b"a layer being pushed right now", OCI_LAYER)
    (root / "s3" / "hello" / "blobs" / "sha256" / "not-a-digest.tmp").write_text("left by someone\n")
    age(root / "s3" / "hello", 2 * HOUR)
    now = time.time()
    os.utime(blob_path(root / "s3" / "hello", str(young["digest"])), (now - 720, now - 720))
    del garbage

    app = LayoutBuilder(root / "s3" / "team" / "app")
    story = [("v1.2.0", 120), ("v1.3.0", 60), ("pr-17", 40), ("v1.4.0", 20), ("nightly", 30), ("pr-18", 3)]
    descs = {}
    for tag, days in story:
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
        descs[tag] = app.manifest([f"layer of {tag}".encode()], config=cfg, annotations={CREATED: _created(days)})
        app.add(descs[tag], tag)
        if tag == "v1.4.0":
            app.add(descs[tag], "latest")
        if tag == "pr-17":
            app.add(app.referrer(descs[tag], b"signature of pr-17"))
    app.save()
    age(root / "s3" / "team" / "app", 2 * HOUR)

    (root / "ocigc.toml").write_text(POLICY)
    (root / "bad.toml").write_text(BAD_POLICY)
    (root / "hello.txt").write_text("hello world\n")
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "README").write_text("the docs directory of the push example\n" * 30)
    for p in (root / "docs" / "README", root / "docs", root / "hello.txt"):  # a tar of docs/ the same each time
        os.utime(p, (BASE, BASE))
    return root


POLICY = """\
# docs/retention.md: keep releases and the two newest images of the apps; remove branches after 14 days
[[rule]]
name = "apps"
repositories = ["team/*"]
keep_last = 2
keep_tags = ['v\\d+\\.\\d+\\.\\d+']
delete_tags = ".*"
delete_older_than = "14d"
untagged = "delete"

[[rule]]
name = "scratch"
repositories = "**"
keep_last = 1
delete_tags = ".*"
"""

BAD_POLICY = POLICY.replace('keep_last = 1\n', 'keep_lst = 1\n')
assert BAD_POLICY.splitlines()[13] == "keep_lst = 1"


# --- running and comparing --------------------------------------------------------------------------------


_NORMAL = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "<time>"),
    (re.compile(r"\d{8}T\d{6}\.\d{6}Z-[^\s/]+?-\d+-[0-9a-f]{8}"), "<run>"),
    (re.compile(r"\b\d+\.\d[smhd]\b"), "<age>"),  # ages (12.0m old), wrapped or not; durations (14d) stay
    (re.compile(r"\bin \d+\.\d+s\b"), "in <secs>"),
    (re.compile(r"\d+(?:\.\d+)? (?:B|KiB|MiB|GiB)/s\b"), "<rate>"),
]
_HEX = re.compile(r"[0-9a-f]{12,}")


def normalize(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        for pattern, repl in _NORMAL:
            line = pattern.sub(repl, line)
        line = _HEX.sub(lambda m: "x" * len(m.group(0)), line)
        out.append(" ".join(line.split()))
    while out and not out[-1]:
        out.pop()
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` (with ``...`` lines matching any lines) against ``actual``, both normalized."""
    exp, act = normalize(expected), normalize(actual)

    def go(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == WILDCARD:
            return any(go(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and exp[i] == act[j] and go(i + 1, j + 1)

    return go(0, 0)


def run_example(example: Example, world: Path, scratch: Path) -> tuple[int, list[str]]:
    """Run the example in a fresh copy of ``world``: (exit code, output lines)."""
    where = scratch / f"{example.file.stem}-{example.line}"
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(world, where, symlinks=True)
    args = shlex.split(example.command)[1:]
    p = subprocess.run([OCIGC, *args], cwd=where, env={**cli_env(), "COLUMNS": "80"}, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
    return p.returncode, p.stdout.rstrip("\n").splitlines()


def update(files: list[Path]) -> int:
    """Rewrite each runnable example's output with what it prints now; the number changed."""
    changed = 0
    with tempfile.TemporaryDirectory(prefix="ocigc-docs-") as tmp:
        world = build_world(Path(tmp) / "world")
        for path in files:
            lines = path.read_text().splitlines()
            for ex in reversed(examples(path)):
                if ex.skip is not None:
                    continue
                _, actual = run_example(ex, world, Path(tmp))
                if matches(ex.expected, actual):
                    continue
                start, end = ex.span
                lines[start:end] = [ex.indent + a if a else "" for a in actual]
                changed += 1
                print(f"{ex.where}: updated", file=sys.stderr)
            path.write_text("\n".join(lines) + "\n")
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite the examples' output")
    args = parser.parse_args()
    if args.update:
        print(f"{update(doc_files())} example(s) updated", file=sys.stderr)


if __name__ == "__main__":
    main()
