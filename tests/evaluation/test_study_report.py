"""`python -m feddm_hpc.evaluation.study_report OUT`: the multi-seed study's table, plots and prox choice.

Files only: fake run copies (config.yaml, metrics.jsonl, eval/round-*.json, DONE) with known
numbers, as jobs/feddm_study.sh leaves them in OUT/runs/<name>/; no training here.
"""
import json
import math

import pytest
import yaml

from feddm_hpc.errors import UserError
from feddm_hpc.evaluation import study_report

PNG = b"\x89PNG\r\n\x1a\n"

# cell -> (config settings, per seed: (final FD, final KID, recall, coverage))
CELLS = {
    "fedavg-iid": ({"algorithm": "fedavg", "partition": "iid", "mu": 0.0, "uplink": "none"},
                   [(100.0, 1.0, 0.30, 0.20), (110.0, 2.0, 0.40, 0.25), (120.0, 3.0, 0.50, 0.30)]),
    "prox-mu0.01-shards": ({"algorithm": "fedprox", "partition": "shards", "mu": 0.01,
                            "uplink": "quant"},
                           [(90.0, 1.0, 0.2, 0.1), (95.0, 1.0, 0.2, 0.1), (100.0, 1.0, 0.2, 0.1)]),
    "prox-mu0.1-shards": ({"algorithm": "fedprox", "partition": "shards", "mu": 0.1,
                           "uplink": "none"},
                          [(80.0, 1.0, 0.2, 0.1), (100.0, 1.0, 0.2, 0.1), (120.0, 1.0, 0.2, 0.1)]),
}
F32 = 1000   # float32 uplink bytes per round


def _config(seed, s):
    return {"seed": seed,
            "data": {"dataset": "fashion_mnist", "partition": s["partition"],
                     "classes_per_client": 2},
            "federation": {"num_clients": 10, "rounds": 2, "algorithm": s["algorithm"]},
            "client": {"optimizer": "adam", "lr": 0.001, "prox_mu": s["mu"]},
            "compression": {"uplink": s["uplink"], "bits": 8, "error_feedback": False}}


def _eval(r, fd, kid=1.0, recall=0.2, coverage=0.1, n=64):
    return {"fd": fd, "kid": kid, "kid_std": 0.0, "precision": 0.5, "recall": recall,
            "density": 0.4, "coverage": coverage, "num_samples": n, "round": r,
            "feature_extractor": "lenet5-fashion_mnist-x", "feature_extractor_id": "key",
            "extractor_test_accuracy": 0.9, "fid_inception": None}


def make_run(root, name, config, final, first_fd=None, done=True):
    run = root / "runs" / name
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    ratio = 0.25 if config["compression"]["uplink"] == "quant" else 1.0
    lines = [{"round": r, "train_loss": 0.1 / (r + 1), "uplink_bytes": F32 * ratio,
              "cum_uplink_bytes": F32 * ratio * (r + 1), "cum_uplink_float32_bytes": F32 * (r + 1),
              "wall_s": 1.0} for r in range(2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    fd, kid, recall, coverage = final
    (run / "eval" / "round-000000.json").write_text(json.dumps(_eval(0, first_fd or 2 * fd)))
    (run / "eval" / "round-000001.json").write_text(
        json.dumps(_eval(1, fd, kid, recall, coverage)))
    if done:
        (run / "DONE").write_text("N=64\n")
    return run


@pytest.fixture
def study(tmp_path):
    for cell, (settings, seeds) in CELLS.items():
        for seed, final in enumerate(seeds):
            make_run(tmp_path, f"{cell}-s{seed}", _config(seed, settings), final)
    # An interrupted copy (no DONE) is left out of everything.
    make_run(tmp_path, "fedavg-iid-s3", _config(3, CELLS["fedavg-iid"][0]),
             (1e6, 1e6, 0.0, 0.0), done=False)
    return tmp_path


def test_split_name_and_method():
    assert study_report.split_name("prox-mu0.01-shards-s12") == ("prox-mu0.01-shards", 12)
    assert study_report.split_name("central-s0") == ("central", 0)
    assert study_report.split_name("plain") == ("plain", None)
    assert study_report.method_of("prox-mu0.01-shards") == "prox-mu0.01"
    assert study_report.method_of("central") == "central"


def test_mean_std_is_the_sample_std():
    s = study_report.mean_std([1.0, 2.0, None, 3.0])
    assert (s["n"], s["mean"], s["std"], s["min"], s["max"]) == (3, 2.0, 1.0, 1.0, 3.0)
    assert study_report.mean_std([5.0])["std"] is None
    assert study_report.mean_std([None])["mean"] is None


def test_grouping_means_and_stds(study, capsys):
    cells = study_report.load_study(study)
    assert "no DONE marker" in capsys.readouterr().err
    assert [c.name for c in cells] == ["fedavg-iid", "prox-mu0.01-shards", "prox-mu0.1-shards"]
    assert [c.seeds for c in cells] == [[0, 1, 2]] * 3
    assert [c.panel for c in cells] == ["iid", "shards", "shards"]

    assert study_report.main([str(study)]) == 0
    summary = json.loads((study / "summary.json").read_text())
    by = {c["cell"]: c for c in summary["cells"]}
    fa = by["fedavg-iid"]
    assert fa["n"] == 3 and fa["seeds"] == [0, 1, 2]
    assert fa["fd"]["mean"] == pytest.approx(110.0) and fa["fd"]["std"] == pytest.approx(10.0)
    assert fa["kid"]["mean"] == pytest.approx(2.0) and fa["kid"]["std"] == pytest.approx(1.0)
    assert fa["recall"]["mean"] == pytest.approx(0.4)
    assert fa["recall"]["std"] == pytest.approx(0.1)
    assert fa["coverage"]["mean"] == pytest.approx(0.25)
    assert fa["coverage"]["std"] == pytest.approx(0.05)
    assert fa["uplink_ratio"]["mean"] == pytest.approx(1.0)
    assert fa["uplink_bytes"]["mean"] == pytest.approx(2 * F32)
    p1 = by["prox-mu0.01-shards"]
    assert p1["fd"]["mean"] == pytest.approx(95.0) and p1["fd"]["std"] == pytest.approx(5.0)
    assert p1["uplink_ratio"]["mean"] == pytest.approx(0.25)
    assert p1["uplink_bytes"]["mean"] == pytest.approx(0.5 * F32)
    assert by["prox-mu0.1-shards"]["fd"]["std"] == pytest.approx(20.0)
    assert summary["best_prox"]["shards"]["mu"] == 0.01
    # The FD curve: mean over seeds per evaluated round, band min..max.
    curve = fa["curve"]
    assert [p["round"] for p in curve] == [0, 1]
    assert curve[0]["fd_mean"] == pytest.approx(220.0)
    assert (curve[1]["fd_min"], curve[1]["fd_max"]) == (100.0, 120.0)
    assert curve[1]["uplink_bytes"] == pytest.approx(2 * F32)

    table = (study / "table.md").read_text()
    rows = {l.split(" | ")[0][2:]: l for l in table.splitlines()
            if l.startswith("| ") and not l.startswith("| cell |")}
    assert set(rows) == {"fedavg-iid", "prox-mu0.01-shards", "prox-mu0.1-shards"}
    assert "| 3 (0, 1, 2) |" in rows["fedavg-iid"]
    assert "| 110 ± 10 |" in rows["fedavg-iid"] and "| 2 ± 1 |" in rows["fedavg-iid"]
    assert "| 0.4 ± 0.1 |" in rows["fedavg-iid"] and "| 1.000 |" in rows["fedavg-iid"]
    assert "| 95 ± 5 |" in rows["prox-mu0.01-shards"]
    assert "| 0.250 |" in rows["prox-mu0.01-shards"]
    assert "fedprox μ=0.01, quant 8-bit" in rows["prox-mu0.01-shards"]
    assert "best μ=0.01" in table
    assert "1e+06" not in table   # the copy without DONE
    for name in ("fd_vs_round.png", "fd_vs_uplink.png"):
        assert (study / name).read_bytes()[:8] == PNG, name
        assert f"![{name[:-4]}]({name})" in table


def test_best_prox(study, capsys):
    cells = study_report.load_study(study)
    mu, means = study_report.best_prox_mu(cells, "shards", seeds=[0, 1, 2], mus=[0.01, 0.1])
    assert mu == 0.01 and means == pytest.approx({0.01: 95.0, 0.1: 100.0})
    with pytest.raises(UserError, match="prox-mu0.001-shards"):
        study_report.best_prox_mu(cells, "shards", mus=[0.001, 0.01, 0.1])
    with pytest.raises(UserError, match="no evaluated"):
        study_report.best_prox_mu(cells, "iid")

    capsys.readouterr()
    assert study_report.main([str(study), "--best-prox", "shards", "--seeds", "0", "1", "2"]) == 0
    out = capsys.readouterr()
    assert out.out == "0.01\n"                 # the shell script reads just this line
    assert "mu=0.01: 95" in out.err
    # A missing seed: exit 2, one error line naming the missing runs.
    assert study_report.main([str(study), "--best-prox", "shards", "--seeds", "0", "3"]) == 2
    err = capsys.readouterr().err
    assert "prox-mu0.01-shards-s3" in err and "prox-mu0.1-shards-s3" in err


def test_single_seed_cells_and_central_panel(tmp_path):
    s = CELLS["fedavg-iid"][0]
    make_run(tmp_path, "fedavg-iid-s0", _config(0, s), (100.0, 1.0, 0.3, 0.2))
    central = _config(0, s)
    central["federation"]["num_clients"] = 1
    make_run(tmp_path, "central-s0", central, (50.0, 0.5, 0.6, 0.5))
    assert study_report.main([str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    by = {c["cell"]: c for c in summary["cells"]}
    assert by["central"]["panel"] == "central" and by["fedavg-iid"]["fd"]["std"] is None
    assert math.isclose(by["central"]["fd"]["mean"], 50.0)
    table = (tmp_path / "table.md").read_text()
    assert "| 100 |" in table and "| 50 |" in table   # one seed: the value, no ± std
    assert (tmp_path / "fd_vs_round.png").read_bytes()[:8] == PNG


def test_no_runs_is_a_user_error(tmp_path, capsys):
    assert study_report.main([str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_paired_differences_remove_the_shared_seed_effect(tmp_path):
    """Seeds move every cell alike (100, 110, 120); q8 is 2 worse on each: the unpaired spread
    (std 10) hides it, the paired difference (+2 ± 0) resolves it. A cell with scattered
    differences stays unresolved, and one without fedavg on its partition is left out."""
    base = {"algorithm": "fedavg", "partition": "iid", "mu": 0.0, "uplink": "none"}
    q8 = dict(base, uplink="quant")
    for seed, fd in enumerate([100.0, 110.0, 120.0]):
        make_run(tmp_path, f"fedavg-iid-s{seed}", _config(seed, base), (fd, 1, 0.3, 0.2))
        make_run(tmp_path, f"q8-iid-s{seed}", _config(seed, q8), (fd + 2.0, 1, 0.3, 0.2))
        make_run(tmp_path, f"q4-iid-s{seed}", _config(seed, q8), (fd + [5, -9, 3][seed], 1, 0.3, 0.2))
        make_run(tmp_path, f"prox-mu0.1-shards-s{seed}", _config(seed, dict(base, partition="shards")),
                 (fd, 1, 0.3, 0.2))
    from feddm_hpc.evaluation.study_paired import paired_table
    rows = {r["cell"]: r for r in paired_table(study_report.load_study(tmp_path))}
    assert set(rows) == {"q8-iid", "q4-iid"}
    assert rows["q8-iid"]["mean"] == pytest.approx(2.0) and rows["q8-iid"]["verdict"] == "worse"
    assert rows["q8-iid"]["deltas"] == pytest.approx([2.0, 2.0, 2.0])
    assert rows["q4-iid"]["verdict"] == "not resolved"
    assert study_report.write_study_report(tmp_path) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| q8-iid | fedavg-iid | 3 | +2.0 ± 0.0 | [+2.0, +2.0] | +2.0, +2.0, +2.0 | worse |" in table


def test_scaffold_is_also_paired_with_fedavg_on_the_same_sgd_clients(tmp_path):
    """scaffold vs sgd (FedAvg, the same SGD clients) is the row about SCAFFOLD's correction;
    scaffold-lr<LR> pairs with sgd-lr<LR>, and a scaffold cell without its twin gets no such row."""
    base = {"algorithm": "fedavg", "partition": "shards", "mu": 0.0, "uplink": "none"}
    scaffold = dict(base, algorithm="scaffold")
    for seed, fd in enumerate([200.0, 210.0, 230.0]):
        make_run(tmp_path, f"fedavg-shards-s{seed}", _config(seed, base), (fd, 1, 0.3, 0.2))
        make_run(tmp_path, f"sgd-shards-s{seed}", _config(seed, base), (fd + 50, 1, 0.3, 0.2))
        make_run(tmp_path, f"scaffold-shards-s{seed}", _config(seed, scaffold), (fd + 40, 1, 0.3, 0.2))
        make_run(tmp_path, f"sgd-lr0.3-shards-s{seed}", _config(seed, base), (fd + 20, 1, 0.3, 0.2))
        make_run(tmp_path, f"scaffold-lr0.3-shards-s{seed}", _config(seed, scaffold),
                 (fd + [21, 19, 26][seed], 1, 0.3, 0.2))
        make_run(tmp_path, f"scaffold-lr0.03-shards-s{seed}", _config(seed, scaffold), (fd, 1, 0.3, 0.2))
    from feddm_hpc.evaluation.study_paired import paired_table
    rows = [(r["cell"], r["baseline"], r) for r in paired_table(study_report.load_study(tmp_path))]
    twins = {(c, b): r for c, b, r in rows if not b.startswith("fedavg")}
    assert set(twins) == {("scaffold-shards", "sgd-shards"), ("scaffold-lr0.3-shards", "sgd-lr0.3-shards")}
    better = twins[("scaffold-shards", "sgd-shards")]
    assert better["deltas"] == pytest.approx([-10.0, -10.0, -10.0]) and better["verdict"] == "better"
    assert twins[("scaffold-lr0.3-shards", "sgd-lr0.3-shards")]["verdict"] == "not resolved"
    assert ("scaffold-shards", "fedavg-shards") in {(c, b) for c, b, _ in rows}   # still vs Adam too
