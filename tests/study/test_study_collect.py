"""`feddm-hpc study SPEC --collect` on synthetic run directories with known numbers: the table,
paired differences with their 95% intervals, notes, plots and summary.json come from the spec."""
import json
import math
import shutil
from pathlib import Path

import pytest
from synthetic import load, make_run, write_spec

from feddm_hpc.cli import main
from feddm_hpc.study.collect import collect
from feddm_hpc.study.paired import paired_delta

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
SPEC = """\
name: synth
seeds: [0, 1, 2]
set: {federation.rounds: 2}
cells:
  base: {}
  q8: {compression.uplink: quant, compression.bits: 8}
  big: {client.lr: 0.01, seeds: [0, 1]}
  late: {client.lr: 0.1, seeds: [0]}
evaluate: {at: all, num_samples: 64}
report:
  title: Synthetic study
  text: One paragraph.
  tables:
    - title: Main
      columns: [cell, setting, seeds, fd, uplink_ratio, eval_round, eval_n]
    - title: Pivot
      rows: [{label: pair, a: base, b: q8}]
      columns: [{value: label, header: what}, seed_list, {value: fd, of: a, header: "a: FD"},
                {value: fd, of: b, header: "b: FD", digits: 2}]
  notes:
    - auto: seed_counts
    - a literal note
    - sweep: {title: lr sweep, cells: [base, big], key: client.lr, label: lr}
  paired: {pairs: [[q8, base], [big, base], [late, base]]}
"""
PLOTS = """\
  series:
    baseline: {cells: [base], color: black, linestyle: "--"}
  plots:
    - {file: fd_vs_round.png, x: round, panels: {all: [base, q8, big]}}
    - {file: fd_vs_uplink.png, x: uplink_bytes}
    - {file: scatter.png, kind: scatter, x: uplink_ratio, y: [fd, kid], cells: [base, q8]}
    - {file: front.png, kind: pareto, x: uplink_bytes, panels: {all: [base, q8, big]}}
"""
FDS = {"base": [100.0, 110.0, 120.0], "q8": [103.0, 111.0, 125.0], "big": [150.0, 162.0]}


def _study(tmp_path, text):
    spec = load(write_spec(tmp_path, text))
    out = tmp_path / "out"
    for cell, fds in FDS.items():
        for seed, fd in enumerate(fds):
            make_run(spec, out, cell, seed, ckpts=[0, 1], evals={0: 2 * fd, 1: fd},
                     ratio=0.25 if cell == "q8" else 1.0)
    make_run(spec, out, "late", 0, ckpts=[0, 1])          # trained, not evaluated: left out
    return spec, out


@pytest.fixture
def study(tmp_path):
    return _study(tmp_path, SPEC)


def _rows(table: str) -> dict:
    """The rows of the tables before the paired differences, by their first column."""
    table = table.split("## Paired")[0]
    return {line.split(" | ")[0][2:]: line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| cell |", "| what |"))}


def test_collect_writes_table_paired_differences_and_notes(study, capsys):
    spec, out = study
    assert collect(spec, out) == 0
    assert "warning: late/seed0 (evaluate): left out" in capsys.readouterr().err
    table = (out / "table.md").read_text()
    assert table.startswith("# Synthetic study\n\nOne paragraph.\n\n## Main\n\n| cell | setting |")
    rows = _rows(table)
    assert rows["base"] == "| base | fedavg | 3 (0, 1, 2) | 110 ± 10 | 1.000 | 2 | 64 |"
    assert rows["q8"] == "| q8 | fedavg, quant 8-bit | 3 (0, 1, 2) | 113 ± 11 | 0.250 | 2 | 64 |"
    assert rows["big"] == "| big | fedavg | 2 (0, 1) | 156 ± 8.5 | 1.000 | 2 | 64 |"
    assert rows["late"] == "| late | – | 0 () | – | – | – | – |"
    assert rows["pair"] == "| pair | 0, 1, 2 | 110 ± 10 | 1.1e+02 ± 11 |"
    assert "| what | seeds | a: FD | b: FD |" in table
    assert "- cells have different numbers of seeds ([2, 3]): the study is incomplete" in table
    # base has seeds 0-2 (100, 110, 120), big 0-1: the sweep compares them on seeds 0 and 1 only
    assert ("- a literal note\n- lr sweep: mean final FD (seeds every value has: 0, 1) lr=0.001: 105, "
            "lr=0.01: 156; best lr=0.001") in table
    assert "- 1 run(s) not complete, left out: late/seed0 (evaluate)" in table
    # Paired: q8 - base = +3, +1, +5 -> mean 3, std 2, t(2) 4.303 x 2 / sqrt 3 = 4.97.
    assert "| q8 | base | 3 | +3.0 ± 2.0 | [-2.0, +8.0] | +3.0, +1.0, +5.0 | not resolved |" in table
    # big - base = +50, +52: mean 51, std 1.41, t(1) 12.706 x 1.41 / sqrt 2 = 12.7.
    assert "| big | base | 2 | +51.0 ± 1.4 | [+38.3, +63.7] | +50.0, +52.0 | worse |" in table
    assert "| late | base |" not in table                   # no common seeds: left out
    assert "## Plots" not in table
    assert "\n\n\n" not in table

    summary = json.loads((out / "summary.json").read_text())
    cells = {c["cell"]: c for c in summary["cells"]}
    assert list(cells) == ["base", "q8", "big", "late"]
    assert cells["q8"]["fd"]["mean"] == pytest.approx(113.0)
    assert cells["q8"]["uplink_bytes"]["mean"] == pytest.approx(500.0)
    assert [r["seed"] for r in cells["big"]["runs"]] == [0, 1]
    assert [p["round"] for p in cells["base"]["curve"]] == [0, 1]
    assert cells["base"]["curve"][0]["fd_mean"] == pytest.approx(220.0)
    q8 = summary["paired"][0]
    assert (q8["cell"], q8["baseline"], q8["deltas"]) == ("q8", "base", [3.0, 1.0, 5.0])
    assert q8["ci95"] == pytest.approx([3 - 4.303 * 2 / 3 ** 0.5, 3 + 4.303 * 2 / 3 ** 0.5])
    assert summary["sweeps"][0]["best"] == 0.001 and summary["sweeps"][0]["seeds"] == [0, 1]
    assert summary["left_out"] == ["late/seed0 (evaluate)"]


@pytest.mark.slow   # matplotlib and three plots: 3-7 s on two shared cores
def test_collect_draws_the_spec_plots(tmp_path):
    spec, out = _study(tmp_path, SPEC + PLOTS)
    assert collect(spec, out) == 0
    table = (out / "table.md").read_text()
    for name in ("fd_vs_round.png", "fd_vs_uplink.png", "scatter.png", "front.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
        assert f"![{name[:-4]}]({name})" in table
    assert table.index("## Plots") > table.index("## Paired")
    # base (2,000 B, FD 110) and q8 (500 B, 113) are on the front; big (2,000 B, 156) is not
    assert ("- Pareto front of mean fd against mean uplink_bytes (front.png, all; lower is better "
            "in both): q8 (500, 113), base (2000, 110)") in table
    front = json.loads((out / "summary.json").read_text())["pareto"][0]
    assert front["front"] == ["q8", "base"] and sorted(front["points"]) == ["base", "big", "q8"]


def test_pareto_front_keeps_the_non_dominated_cells():
    from feddm_hpc.study.pareto import pareto_front

    points = {"a": (1.0, 5.0), "b": (2.0, 3.0), "c": (2.0, 4.0), "d": (3.0, 3.0), "e": (4.0, 1.0)}
    assert pareto_front(points) == ["a", "b", "e"]        # c and d are dominated by b
    assert pareto_front({"x": (1.0, 1.0), "y": (1.0, 1.0)}) == ["x", "y"]   # ties dominate no one


def test_paired_delta_math():
    assert paired_delta({0: 1.0}, {0: 0.0}) is None              # one common seed
    d = paired_delta({0: 10.0, 1: 12.0, 2: 14.0, 5: 0.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert d["seeds"] == [0, 1, 2] and d["mean"] == 12.0 and d["std"] == 2.0
    assert d["verdict"] == "worse" and d["ci95"][0] > 0
    assert "ratios" not in d                                      # a zero baseline has no ratio
    r = paired_delta({0: 12.0, 1: 15.0, 2: 24.0}, {0: 10.0, 1: 10.0, 2: 20.0})
    assert r["ratios"] == [1.2, 1.5, 1.2]
    logs = [math.log(1.2), math.log(1.5), math.log(1.2)]          # geometric: on the logarithms
    mean = sum(logs) / 3
    half = 4.303 * math.sqrt(sum((x - mean) ** 2 for x in logs) / 2) / math.sqrt(3)
    assert r["ratio_mean"] == pytest.approx((1.2 * 1.5 * 1.2) ** (1 / 3))
    assert r["ratio_ci95"] == pytest.approx([math.exp(mean - half), math.exp(mean + half)])
    assert r["ratio_ci95"][0] > 1.0 / 1.5                         # positive, unlike mean ± t sd


def test_collect_without_runs_is_exit_2(tmp_path, capsys):
    path = write_spec(tmp_path, SPEC)
    assert main(["study", str(path), "--collect", "--out", str(tmp_path / "empty")]) == 2
    assert "no complete run of the study to report yet" in capsys.readouterr().err


@pytest.mark.slow   # copies up to ~9 MB of runs and draws three plots: ~5-10 s
@pytest.mark.parametrize("spec_path,results", [("configs/privacy/study.yaml", "results/privacy"),
                                               ("configs/study/sgd.yaml", "results/feddm_study_sgd"),
                                               ("configs/frontier/lr_probe.yaml",
                                                "results/frontier_lr_probe"),
                                               ("configs/frontier/study.yaml", "results/frontier")])
def test_committed_studies_regenerate_identically(tmp_path, spec_path, results):
    """The committed table.md, plots and summary.json come out of --collect unchanged."""
    src = ROOT / results
    out = tmp_path / "out"
    shutil.copytree(src / "runs", out / "runs")
    assert main(["study", str(ROOT / spec_path), "--collect", "--out", str(out)]) == 0
    for name in ["table.md"] + sorted(p.name for p in src.glob("*.png")):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    old, new = (json.loads((d / "summary.json").read_text()) for d in (src, out))
    for s in (old, new):
        s.pop("spec")
        for c in s["cells"]:
            for r in c["runs"]:
                r.pop("path")
    assert new == old


def test_curves_against_training_cpu_seconds(tmp_path):
    """x: train_cpu_s (the recipe study's plot): the cumulative phases.train_cpu at each
    evaluated round."""
    from feddm_hpc.evaluation.report import load_run
    from feddm_hpc.study.values import curve

    spec = load(write_spec(tmp_path, "seeds: [0]\nset: {federation.rounds: 2}\ncells: {a: {}}\n"
                                     "evaluate: {at: all, num_samples: 64}\nreport: {plots: [{file: cpu.png, "
                                     "x: train_cpu_s, panels: {all: [a]}}]}\n"))
    out = tmp_path / "out"
    d = make_run(spec, out, "a", 0, ckpts=[0, 1], evals={0: 9.0, 1: 5.0})
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    (d / "metrics.jsonl").write_text("".join(json.dumps({**x, "phases": {"train_cpu": 3.0}}) + "\n"
                                             for x in lines))
    pts = curve([load_run(d)], "fd", cpu_s=True)
    assert [(p["train_cpu_s"], p["fd_mean"]) for p in pts] == [(3.0, 9.0), (6.0, 5.0)]
    assert "train_cpu_s" not in curve([load_run(d)])[0]   # summary.json's curves keep their keys
    assert collect(spec, out) == 0 and (out / "cpu.png").stat().st_size > 1000


def test_sweep_compares_values_on_their_common_seeds():
    """A one-seed value against a two-seed mean is no comparison: seed 0 of `a` (200) loses to
    seed 0 of `b` (190), though b's mean over seeds 0 and 1 (245) is higher."""
    from types import SimpleNamespace

    from feddm_hpc.study.collect import sweep_note

    def cell(lr, fds):
        runs = [{"client.lr": lr}] * len(fds)
        return runs, {"runs": [{"seed": s, "fd": v} for s, v in fds.items()]}
    (ra, sa), (rb, sb), (rc, sc) = cell(0.1, {0: 200.0}), cell(0.2, {0: 190.0, 1: 300.0}), \
        cell(0.3, {1: 150.0})
    note = SimpleNamespace(sweep=("lr", ["a", "b"], "client.lr", "lr"))
    text, info = sweep_note(note, {"a": sa, "b": sb}, {"a": ra, "b": rb})
    assert text == "lr: mean final FD (seeds every value has: 0) lr=0.1: 200, lr=0.2: 190; best lr=0.2"
    assert info["seeds"] == [0] and info["best"] == 0.2
    note = SimpleNamespace(sweep=("lr", ["a", "c"], "client.lr", "lr"))
    text, info = sweep_note(note, {"a": sa, "c": sc}, {"a": ra, "c": rc})
    assert text == "lr: no seed common to every lr value: no best value named" and info is None


def test_partial_sharing_reports_the_clients_own_data_fd(tmp_path):
    """A partially shared run's final evaluation carries the mixture's per-client FDs; the
    `fd_own_data` column gives their mean over clients, mean ± std over seeds, and '–' for a
    global model's cell, which has none."""
    spec = load(write_spec(tmp_path, """\
name: own
seeds: [0, 1]
set: {federation.rounds: 2}
cells:
  dense: {}
  part: {federation.shared_parts: [encoder]}
evaluate: {at: final, num_samples: 64}
report:
  tables:
    - {title: T, columns: [cell, seeds, fd, fd_own_data]}
"""))
    out = tmp_path / "out"
    for cell in ("dense", "part"):
        for seed, own in enumerate(([60.0, 80.0], [70.0, 110.0])):
            d = make_run(spec, out, cell, seed, ckpts=[1], evals={1: 50.0 + seed})
            if cell == "part":
                path = d / "eval" / "round-000001.json"
                record = json.loads(path.read_text())
                record["mixture"] = {"fd_own_data": own, "fd_own_data_mean": sum(own) / 2}
                path.write_text(json.dumps(record))
    assert collect(spec, out) == 0
    rows = _rows((out / "table.md").read_text())
    assert rows["dense"] == "| dense | 2 (0, 1) | 50.5 ± 0.71 | – |"
    assert rows["part"] == "| part | 2 (0, 1) | 50.5 ± 0.71 | 80 ± 14 |"     # means 70 and 90
    cells = {c["cell"]: c for c in json.loads((out / "summary.json").read_text())["cells"]}
    assert cells["part"]["fd_own_data"]["mean"] == pytest.approx(80.0)
    assert cells["dense"]["fd_own_data"]["n"] == 0


def test_ratio_columns_hide_a_spread_of_float_rounding():
    """Seeds with the same bytes give ratios equal but for the last bit (the hypernetwork's
    0.091 ± 1.7e-17 in the frontier table): no spread is shown for them, a real one is."""
    from feddm_hpc.study.tables import _value
    s = {"n": 3, "uplink_dense_ratio": {"mean": 0.091, "std": 1.7e-17}}
    assert _value("uplink_dense_ratio", s, None) == "0.091"
    s = {"n": 3, "uplink_dense_ratio": {"mean": 0.091, "std": 0.004}}
    assert _value("uplink_dense_ratio", s, None) == "0.091 ± 0.004"
