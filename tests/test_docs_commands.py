"""The README and docs/ stay true: every `afrocomet ...` command they show names a real subcommand and
real flags (with values its type accepts), the README stays one short page that starts with the
set-up and the result table, every module is in the layout page, and every relative link resolves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from afrocomet.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SETUP = ('python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -c constraints.txt '
         '-e . && afrocomet run --data-dir ../shared/data/afrisenti')
TESTS = ('python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -c constraints.txt '
         '-e ".[test]" && python -m pytest')
TABLE = ["<!-- default-run-table -->", "<!-- /default-run-table -->"]
README_LINES, FIRST_SCREEN = 150, 60
SHELL_BREAKS = {"&&", "||", "|", ";", ">", ">>", "2>", "<"}
PLACEHOLDER = re.compile(r"^(<[^>]+>|[A-Z][A-Z_]*|\.\.\.)$")  # NAME, DIR, <out>, ...: a value the reader fills


def _fenced_and_prose(text: str) -> tuple[list[str], str]:
    """(logical lines of the fenced code blocks, backslash continuations joined; the prose outside them)."""
    code, prose, fenced, pending = [], [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            prose.append(line)
        elif line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            code.append(pending + line)
            pending = ""
    return code, "\n".join(prose)


def _afrocomet_parts(line: str) -> list[list[str]]:
    """The `afrocomet` commands in one shell line: their arguments after `afrocomet` (also `-m afrocomet`)."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # unbalanced quotes: not a shell line
        return []
    segments, current = [], []
    for token in tokens:
        if token in SHELL_BREAKS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    found = []
    for seg in segments:
        for i, token in enumerate(seg):
            if token == "afrocomet" and (i == 0 or seg[i - 1] == "-m"):
                found.append(seg[i + 1:])
                break
    return found


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(the text shown, its arguments) for every `afrocomet ...` command in code blocks and inline code."""
    code, prose = _fenced_and_prose(text)
    out = [(line.strip(), args) for line in code for args in _afrocomet_parts(line)]
    for paragraph in re.split(r"\n\s*\n", prose):
        for span in re.findall(r"`([^`]+)`", paragraph):
            span = " ".join(span.split())
            if span.startswith("afrocomet "):
                out.extend((span, args) for args in _afrocomet_parts(span))
    return out


def _options(command: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}


def problems(args: list[str]) -> list[str]:
    """What is wrong with `afrocomet <args>`: an unknown subcommand or flag, a missing or bad value."""
    group_flags = _options(cli)
    while args and args[0] in group_flags:
        args = args[1:]
    if not args:
        return []
    if args[0] not in cli.commands:
        return [f"no subcommand {args[0]!r} (known: {', '.join(sorted(cli.commands))})"]
    command = cli.commands[args[0]]
    options, ctx, found = _options(command), click.Context(command, info_name=args[0]), []
    takes_arguments = any(isinstance(p, click.Argument) for p in command.params)
    rest = list(args[1:])
    while rest:
        token = rest.pop(0)
        if token in ("-h", "--help"):
            return found
        if not token.startswith("-") or token == "-":
            if not takes_arguments and token != "...":
                found.append(f"{args[0]}: unexpected argument {token!r}")
            continue
        name, eq, value = token.partition("=")
        param = options.get(name)
        if param is None:
            found.append(f"{args[0]}: no such option {name}")
            continue
        if param.is_flag or param.count:
            continue
        if not eq:
            if not rest or (rest[0].startswith("-") and rest[0] != "-" and rest[0] in options):
                found.append(f"{args[0]}: {name} needs a value")
                continue
            value = rest.pop(0)
        if PLACEHOLDER.match(value) or isinstance(param.type, (click.Path, click.File)):
            continue
        try:
            param.type.convert(value, param, ctx)
        except click.BadParameter as exc:
            found.append(f"{args[0]}: {name} {value!r}: {exc.format_message()}")
    return found


ALL = [(page, shown, args) for page in PAGES for shown, args in commands(page.read_text(encoding="utf-8"))]


def test_the_docs_show_many_commands():
    assert len(ALL) >= 60, len(ALL)  # the extractor finds them (a broken one would find none)
    assert {page.name for page, _, _ in ALL} >= {"README.md", "running.md", "performance.md", "resume.md"}


@pytest.mark.parametrize("page, shown, args", ALL, ids=[f"{p.name}:{' '.join(a[:2])}" for p, _, a in ALL])
def test_every_command_in_the_docs_exists(page, shown, args):
    assert problems(args) == [], f"{page.relative_to(ROOT)}: `{shown}`"


def _all_flags() -> set[str]:
    flags = set(_options(cli))
    for command in cli.commands.values():
        flags |= set(_options(command))
    return flags


def flags_in_prose(text: str) -> list[str]:
    """Flags named alone in inline code (`--student-init layers`, `--trim-vocab/--no-trim-vocab`)."""
    _, prose = _fenced_and_prose(text)
    found = []
    for span in re.findall(r"`([^`]+)`", prose):
        for part in span.split()[0].split("/") if span.startswith("--") else []:
            name = part.split("=")[0]
            if re.fullmatch(r"--[a-z][a-z0-9-]*", name):
                found.append(name)
    return found


def test_every_flag_named_in_the_prose_exists():
    known = _all_flags()
    unknown = {f"{page.name}: {flag}" for page in PAGES for flag in flags_in_prose(page.read_text(encoding="utf-8"))
               if flag not in known}
    assert unknown == set()


@pytest.mark.parametrize("line, needle", [
    ("afrocomet run --no-such-flag", "no such option --no-such-flag"),
    ("afrocomet rn --quick", "no subcommand 'rn'"),
    ("afrocomet run --matching nope", "--matching 'nope'"),
    ("afrocomet run --seeds two", "--seeds 'two'"),
    ("afrocomet run --data-dir", "--data-dir needs a value"),
    ("afrocomet presets extra", "unexpected argument 'extra'"),
    ("python3 -m afrocomet run --max-lenght 64", "no such option --max-lenght"),
    ("pip install x && afrocomet doctor --config a.yaml --bogus # comment", "no such option --bogus"),
])
def test_a_renamed_flag_or_subcommand_is_caught(line, needle):
    (args,) = _afrocomet_parts(line)
    assert any(needle in p for p in problems(args)), problems(args)


def test_extraction_covers_blocks_inline_spans_and_continuations():
    text = ("Run `afrocomet run --resume\nruns/big` or `afrocomet: error: x`.\n\n```bash\n"
            "accelerate launch --num_processes 2 \\\n    -m afrocomet distill --config c.yaml   # note\n"
            "afrocomet config --quick > run.yaml\n```\n")
    assert [args for _, args in commands(text)] == [["distill", "--config", "c.yaml"], ["config", "--quick"],
                                                    ["run", "--resume", "runs/big"]]


def test_the_readme_is_one_short_page_that_starts_with_the_setup_and_the_table():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_LINES, len(lines)
    first = lines[:FIRST_SCREEN]
    assert SETUP in first and TESTS in first
    assert all(marker in first for marker in TABLE)
    assert first.index(TABLE[0]) < first.index(TABLE[1])
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TESTS in ci  # CI runs exactly the README's test command


def test_the_layout_page_names_every_module():
    layout = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    src = ROOT / "src" / "afrocomet"
    missing = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if len(rel.parts) == 1:
            ok = f"`{rel.name}`" in layout
        else:
            package_row = next((row for row in layout.splitlines() if row.startswith(f"| `{rel.parts[0]}/`")), "")
            ok = rel.name == "__init__.py" or f"`{rel.name}`" in package_row
        if not ok:
            missing.append(str(rel))
    assert missing == [], f"docs/layout.md misses {missing}"


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
