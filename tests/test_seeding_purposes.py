"""Every random stream of the package has a purpose number of its own. Two purposes sharing a
number would correlate streams that should be independent (secure aggregation's masks and the
shuffled cohort passes once shared 16, kept apart only by their seed tuples' lengths), so all
purposes live in seeding.Purpose (unique at import) and no module may seed with a number of its
own: every seed_for / numpy_rng call and every SeedSequence literal in the package names its
purpose through seeding."""
import ast

import pytest

from feddm_hpc import seeding

from conftest import ROOT

PACKAGE = ROOT / "feddm_hpc"
NAMES = {p.name for p in seeding.Purpose}


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "seeding.py" or p.parent != PACKAGE)


def _purpose_name(node, aliases) -> str | None:
    """The seeding purpose an argument names, or None if it names none."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "int" and node.args:
        return _purpose_name(node.args[0], aliases)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "seeding":
        return node.attr if node.attr in NAMES else None
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    return None


def _module_aliases(tree) -> dict:
    """NAME = seeding.X assignments at module level (e.g. ATTACK_PURPOSE = seeding.ATTACK)."""
    out = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = _purpose_name(stmt.value, {})
            if name is not None:
                out[stmt.targets[0].id] = name
    return out


def test_purposes_are_unique_and_the_module_names_match_the_enum():
    values = [int(p) for p in seeding.Purpose]
    assert len(values) == len(set(values))
    for p in seeding.Purpose:
        assert getattr(seeding, p.name) == int(p)
    assert seeding.SECAGG != seeding.COHORT_PASS   # the collision this test was written for


def test_no_module_defines_a_purpose_number_of_its_own():
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and "PURPOSE" in t.id
                                                    for t in stmt.targets):
                if isinstance(stmt.value, ast.Constant):
                    offenders.append(f"{path.relative_to(ROOT)}:{stmt.lineno}")
    assert not offenders, f"purpose numbers defined outside feddm_hpc/seeding.py: {offenders}"


def test_every_seeded_stream_names_a_seeding_purpose():
    unnamed, seen = [], set()
    for path in _sources():
        tree = ast.parse(path.read_text())
        aliases = _module_aliases(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("seed_for", "numpy_rng") and len(node.args) >= 2:
                arg = node.args[1]
            elif func == "SeedSequence" and node.args and isinstance(node.args[0], ast.List) \
                    and len(node.args[0].elts) >= 2:
                arg = node.args[0].elts[1]
            else:
                continue
            name = _purpose_name(arg, aliases)
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if name is None and not (func != "SeedSequence" and isinstance(arg, ast.Name)):
                unnamed.append(where)   # a parameter passed through (streams=...) is fine
            elif name is not None:
                seen.add(name)
    assert not unnamed, f"seeded with a purpose that is not seeding's: {unnamed}"
    # The scan does reach the streams (a scan that found nothing could not fail).
    assert {"ENCODE", "DP_NOISE", "ATTACK", "SECAGG", "NETWORK"} <= seen   # TRAIN: passed through (client.py streams=)


@pytest.mark.parametrize("purpose", [seeding.SECAGG, seeding.COHORT_PASS])
def test_the_two_formerly_shared_streams_differ(purpose):
    other = seeding.COHORT_PASS if purpose == seeding.SECAGG else seeding.SECAGG
    assert seeding.seed_for(0, purpose, 3, 1) != seeding.seed_for(0, other, 3, 1)
