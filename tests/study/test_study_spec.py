"""The study spec: the committed specs load, every mistake is exit 2 naming its field, cells expand
to runs (seed by seed) with the right `train` and `evaluate` arguments."""
from pathlib import Path

import pytest
from synthetic import TINY, TWO_CELLS, write_spec

from feddm_hpc.cli import main
from feddm_hpc.errors import ConfigError
from feddm_hpc.study.runs import evaluate_args, plan_runs, train_args
from feddm_hpc.study.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ["configs/study/study.yaml", "configs/study/sgd.yaml", "configs/table/study.yaml",
             "configs/privacy/study.yaml", "configs/recipe/study.yaml", "configs/frontier/study.yaml",
             "configs/frontier/lr_probe.yaml"]


@pytest.mark.parametrize("path", COMMITTED)
def test_committed_specs_load(path):
    spec = load_spec(ROOT / path)
    assert spec.cells and spec.report.tables
    assert len({c.name for c in spec.cells}) == len(spec.cells)


def _error(tmp_path, capsys, body):
    path = write_spec(tmp_path, body)
    code = main(["study", str(path), "--status", "--out", str(tmp_path / "out")])
    return code, capsys.readouterr().err


OK_CELLS = "seeds: [0]\ncells:\n  a: {}\n  b: {federation.rounds: 3}\n"
BAD = [
    ("cels: {}\n" + OK_CELLS, "cels: unknown key"),
    ("seeds: [0, x]\ncells: {a: {}}\n", "seeds[1]: expected an integer, got 'x'"),
    ("cells:\n  a: {seeds: [0, 0]}\n", "cells.a.seeds: repeated values"),
    ("cells:\n  a: {}\n", "cells.a.seeds: required"),
    ("seeds: [0]\ncells:\n  a: {federation.rounds: two}\n",
     "cells.a: federation.rounds: expected an integer"),
    ("seeds: [0]\ncells:\n  a: {federation.roundz: 2}\n", "cells.a: federation.roundz: unknown key"),
    ("seeds: [0]\ncells:\n  a: {seed: 3}\n", "cells.a.seed: the study sets each run's seed"),
    ("seeds: [0]\ncells:\n  a/b: {}\n", "cells.a/b: a cell name is a folder name"),
    ("ranks: 8\n" + OK_CELLS, "cells.a: ranks 8 exceed its federation.num_clients 4"),
    (OK_CELLS + "evaluate: {at: sometimes}\n", "evaluate.at: 'sometimes' is not one of final, all"),
    (OK_CELLS + "evaluate: {num_samples: 3}\n", "evaluate.num_samples: must be >= 6"),
    (OK_CELLS + "evaluate: {samples: 3}\n", "evaluate.samples: unknown key"),
    (OK_CELLS + "report: {tables: [{rows: [a, zz]}]}\n", "report.tables[0].rows[1]: unknown cell 'zz'"),
    (OK_CELLS + "report: {tables: [{columns: [cell, fid]}]}\n", "report.tables[0].columns[1].value: 'fid'"),
    (OK_CELLS + "report: {tables: [{columns: [{value: fd, of: x}]}]}\n",
     "report.tables[0].columns[0].of: 'x' is not one of"),
    (OK_CELLS + "report: {paired: {pairs: [[a, c]]}}\n", "report.paired.pairs[0][1]: unknown cell 'c'"),
    (OK_CELLS + "report: {paired: {pairs: [a, b]}}\n", "report.paired.pairs[0]: expected [cell, baseline]"),
    (OK_CELLS + "report: {plots: [{file: p.png, x: time}]}\n", "report.plots[0].x: 'time' is not one of"),
    (OK_CELLS + "report: {notes: [{auto: everything}]}\n", "report.notes[0].auto: 'everything'"),
    (OK_CELLS + "slurm: {max_parallel: -1}\n", "slurm.max_parallel: must be >= 0"),
]


@pytest.mark.parametrize("body,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_spec_mistakes_are_exit_2_naming_the_field(tmp_path, capsys, body, message):
    code, err = _error(tmp_path, capsys, body)
    assert code == 2, err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err


def test_missing_base_and_missing_file(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text("cells: {a: {}}\nseeds: [0]\n")
    assert main(["study", str(path), "--status"]) == 2
    assert "base: required" in capsys.readouterr().err
    path.write_text("base: nowhere.yaml\ncells: {a: {}}\nseeds: [0]\n")
    assert main(["study", str(path), "--status"]) == 2
    assert "base: nowhere.yaml: file not found" in capsys.readouterr().err


def test_cells_expand_to_runs_seed_by_seed(tmp_path):
    spec = load_spec(write_spec(tmp_path, TWO_CELLS.replace("q8: {", "q8: {seeds: [1], ")
                                + "threads: 1\n"))
    plans = plan_runs(spec, tmp_path / "out")
    assert [(p.cell, p.seed) for p in plans] == [("base", 0), ("base", 1), ("q8", 1), ("base", 2)]
    assert [p.index for p in plans] == [0, 1, 2, 3]
    q8 = plans[2]
    assert q8.run_dir == tmp_path / "out" / "runs" / "q8" / "seed1"
    assert train_args(spec, q8) == [
        "train", str(TINY), "--run-dir", str(q8.run_dir), "--set", "federation.rounds=2",
        "--set", "system.threads=1", "--set", "system.progress=false",
        "--set", "compression.uplink=quant", "--set", "compression.bits=8", "--set", "seed=1"]
    assert spec.config(spec.cell("q8"), 1).compression.bits == 8


def test_evaluate_maps_onto_the_evaluate_flags(tmp_path):
    spec = load_spec(write_spec(tmp_path, TWO_CELLS.replace(
        "evaluate: {at: final, num_samples: 64}",
        "threads: 2\nevaluate: {at: all, num_samples: 16, sampler: ddim, steps: 50, eta: 0.5,"
        " seed: 3, extractor_epochs: 1, extractor_train_subset: 500, memorization: false,"
        " set: {sampling.eta: 1.0}}")))
    plan = plan_runs(spec, tmp_path)[0]
    assert evaluate_args(spec, plan, 1) == [
        "evaluate", str(plan.run_dir / "checkpoints" / "round-000001.h5"), "--num-samples", "16",
        "--sampler", "ddim", "--steps", "50", "--eta", "0.5", "--seed", "3",
        "--extractor-epochs", "1", "--extractor-train-subset", "500", "--no-memorization",
        "--set", "sampling.eta=1.0", "--set", "system.threads=2"]
    ev = spec.evaluate
    assert ev.matches({"num_samples": 16, "sampler": "ddim", "steps": 50, "eta": 0.5, "seed": 3})
    assert not ev.matches({"num_samples": 16, "sampler": "ddim", "steps": 20, "eta": 0.5, "seed": 3})


def test_load_spec_raises_config_error_with_the_path(tmp_path):
    path = write_spec(tmp_path, "seeds: [0]\ncells: {a: {data.partition: stripes}}\n")
    with pytest.raises(ConfigError, match=r"spec\.yaml: cells\.a: data\.partition"):
        load_spec(path)
