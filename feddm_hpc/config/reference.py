"""The key reference of docs/configuration.md, generated from the section dataclasses.

`render()` returns one Markdown table per section: every key with its default, its type or valid
values (a Literal's values, from choices.py) and the comment its field carries in sections.py.
The comments are read from that file's source with tokenize and ast, never by evaluating it: a
field's trailing comment and the comment lines just below it whose text is aligned with that
comment's text; a field without one takes the comment lines just above it (above a field that has
one, they are a note on its group and stay out of the table).

    python -m feddm_hpc.config.reference                                  # print the block
    python -m feddm_hpc.config.reference --write docs/configuration.md    # regenerate it in place
    python -m feddm_hpc.config.reference --check docs/configuration.md    # exit 1 when stale

tests/config/test_reference_doc.py fails when the page and the dataclasses differ.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from typing import Any

from feddm_hpc.config import output_sections, sections

BEGIN = "<!-- generated:config -->"
END = "<!-- /generated:config -->"
REGENERATE = "python -m feddm_hpc.config.reference --write docs/configuration.md"


def _comments(source: str) -> tuple[dict[int, tuple[int, str]], set]:
    """line -> (column of the comment's text, text) for every comment; the comment-only lines."""
    found, alone = {}, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            body = tok.string[1:]
            text = body.lstrip()
            found[tok.start[0]] = (tok.start[1] + 1 + len(body) - len(text), text.rstrip())
            if not tok.line[:tok.start[1]].strip():
                alone.add(tok.start[0])
    return found, alone


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the field's comment text, one line, for every class in source."""
    found, alone = _comments(source)
    out: dict[tuple[str, str], str] = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        claimed = cls.lineno
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            lead: list[str] = []
            line = stmt.lineno - 1
            while line > claimed and line in alone:
                lead.insert(0, found[line][1])
                line -= 1
            parts = lead
            line = stmt.end_lineno
            if line in found and line not in alone:
                column, text = found[line]
                parts = [text]
                while line + 1 in alone and found[line + 1][0] == column:
                    line += 1
                    parts.append(found[line][1])
            claimed = line
            out[(cls.name, stmt.target.id)] = " ".join(p for p in parts if p)
    return out


def _yaml(value: Any) -> str:
    """A default as it is written in a config file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, float):
        text = repr(value)
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    return str(value)


def _values(hint: Any) -> str:
    """A field's type, or the valid values of a Literal, for the reference's values column."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return ", ".join(f"`{_yaml(v)}`" for v in args)
    if origin is typing.Union:
        return " or ".join("`null`" if a is type(None) else _values(a) for a in args)
    if origin is tuple:
        return f"list of {_values(args[0])}"
    if origin is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(prefix: str, cls: type, notes: dict[tuple[str, str], str]) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = ["| key | default | values | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append(f"| `{prefix}{f.name}` | `{_yaml(default)}` | {_cell(_values(hints[f.name]))} "
                    f"| {_cell(notes.get((cls.__name__, f.name), ''))} |")
    return rows


def render() -> str:
    """The generated block, markers included: the top-level keys, then one table per section."""
    notes = {**field_comments(inspect.getsource(sections)),
             **field_comments(inspect.getsource(output_sections))}
    hints = typing.get_type_hints(sections.Config)
    note = f"<!-- Generated from feddm_hpc/config/sections.py; do not edit. Regenerate: {REGENERATE} -->"
    out = [BEGIN, note, "", "### Top-level keys", ""]
    out += _table("", sections.Config, notes)
    for f in dataclasses.fields(sections.Config):
        cls = hints[f.name]
        if dataclasses.is_dataclass(cls):
            out += ["", f"### {f.name}", ""] + _table(f"{f.name}.", cls, notes)
    return "\n".join(out + ["", END])


def splice(page: str, block: str) -> str:
    """The page with the text from BEGIN to END (both included) replaced by block."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {BEGIN} ... {END} block")
    return page[:start] + block + page[end + len(END):]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(render())
        return 0
    if len(args) != 2 or args[0] not in ("--write", "--check"):
        print("usage: python -m feddm_hpc.config.reference [--write|--check PAGE.md]", file=sys.stderr)
        return 2
    with open(args[1], encoding="utf-8") as fh:
        page = fh.read()
    fresh = splice(page, render())
    if args[0] == "--check":
        if fresh != page:
            print(f"{args[1]}: the config reference is stale; regenerate: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if fresh != page:
        with open(args[1], "w", encoding="utf-8") as fh:
            fh.write(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
