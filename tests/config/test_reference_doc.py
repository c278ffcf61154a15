"""docs/configuration.md's key reference is generated from the config dataclasses and must equal
what the code generates now (feddm_hpc/config/reference.py reads defaults, types, Literal values
and each field's source comment)."""
import dataclasses
import typing

from feddm_hpc.config import Config, reference

from conftest import ROOT

PAGE = ROOT / "docs" / "configuration.md"
HINT = f"regenerate it: .venv/bin/{reference.REGENERATE}"


def test_the_page_holds_the_generated_reference():
    page = PAGE.read_text(encoding="utf-8")
    assert reference.BEGIN in page and reference.END in page, f"{PAGE}: no generated block; {HINT}"
    assert reference.splice(page, reference.render()) == page, \
        f"{PAGE}: the config reference differs from feddm_hpc/config/sections.py; {HINT}"


def test_every_key_has_a_row_with_its_default():
    block = reference.render()
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        if not dataclasses.is_dataclass(hints[section.name]):
            assert f"| `{section.name}` |" in block
            continue
        assert f"\n### {section.name}\n" in block
        for f in dataclasses.fields(hints[section.name]):
            assert f"| `{section.name}.{f.name}` | `" in block, f"{section.name}.{f.name}"


def test_comments_defaults_and_values_are_read_from_the_source():
    rows = {line.split(" | ")[0].strip("| `"): line for line in reference.render().splitlines()
            if line.startswith("| `")}
    # a trailing comment; a Literal's values in the config's order
    assert "deterministic kernels, no TF32" in rows["system.deterministic"]
    assert "`fp32`, `bf16`" in rows["system.precision"]
    # a trailing comment continued on an aligned comment line below it
    assert rows["system.transport"].endswith(
        "(rank-invariant) hierarchical: ranks pre-sum their clients, then Allreduce |")
    # comment lines above a field without a trailing comment; a group note above one with its own
    assert "shuffled: every client once per pass" in rows["federation.cohort_sampling"]
    assert "Realism" not in rows["federation.dropout_prob"]
    assert "each cohort client independently fails to report" in rows["federation.dropout_prob"]
    # YAML-style defaults; pipes in a comment escaped for the table
    assert "| `null` | float or `null` |" in rows["privacy.clip_norm"]
    assert "| `1.0e-05` |" in rows["privacy.delta"]
    assert "| `[1, 2, 2]` | list of int |" in rows["model.channel_mults"]
    assert "8 \\| 4 \\| 2" in rows["compression.bits"]


def test_field_comments_on_a_small_source():
    source = (
        "class A:\n"
        "    x: int = 1          # first line\n"
        "                        # continued\n"
        "    # above y\n"
        "    y: int = 2\n"
        "    # a group note\n"
        "    z: int = 3          # own comment\n"
        "    w: int = 4\n")
    assert reference.field_comments(source) == {
        ("A", "x"): "first line continued", ("A", "y"): "above y",
        ("A", "z"): "own comment", ("A", "w"): ""}


def test_write_and_check(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text(f"# title\n\n{reference.BEGIN}\nstale\n{reference.END}\n\nafter\n")
    assert reference.main(["--check", str(page)]) == 1
    assert "regenerate" in capsys.readouterr().err
    assert reference.main(["--write", str(page)]) == 0
    assert reference.main(["--check", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# title\n\n") and text.endswith("\n\nafter\n") and "stale" not in text
