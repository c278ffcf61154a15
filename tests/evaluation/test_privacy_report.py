"""`python -m feddm_hpc.evaluation.privacy_report OUT`: the privacy study's tables from fake run
copies with known numbers (as jobs/privacy_study.sh leaves them in OUT/runs/<cell>-s<seed>/)."""
import json
import math

import yaml

from feddm_hpc.evaluation import privacy_report


def make_run(root, name, *, clip=None, z=0.0, eps=None, fd=100.0, near=0.0, dist=5.0, rule="mean",
             attacked=False, loss=0.05):
    run = root / "runs" / name
    (run / "eval").mkdir(parents=True)
    config = {"seed": 0, "federation": {"num_clients": 20, "rounds": 2},
              "privacy": {"clip_norm": clip, "noise_multiplier": z, "delta": 1e-5},
              "server": {"aggregation": rule},
              "attack": {"kind": "scaled" if attacked else "none"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [{"round": r, "train_loss": loss, "uplink_bytes": 10, "epsilon": eps,
              **({"clipped_fraction": 0.5} if clip else {})} for r in range(2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    mem = {"near_copy_fraction": {"pixel": near, "feature": near / 2},
           "median_nearest_distance": {"pixel": dist, "feature": 1.0},
           "reference": {"median_nearest_distance": {"pixel": 10.0, "feature": 2.0}}}
    (run / "eval" / "round-000001.json").write_text(json.dumps(
        {"fd": fd, "kid": 1.0, "num_samples": 64, "round": 1, "memorization": mem}))
    (run / "DONE").write_text("N=64\n")


def test_tables_give_mean_and_std_per_cell_with_epsilon_and_memorization(tmp_path):
    make_run(tmp_path, "nodp-s0", fd=100.0, near=0.02)
    make_run(tmp_path, "nodp-s1", fd=110.0, near=0.04)
    make_run(tmp_path, "clip-s0", clip=0.5, fd=120.0)          # no noise: epsilon is inf
    make_run(tmp_path, "dp-z1-s0", clip=0.5, z=1.0, eps=43.5, fd=300.0, dist=9.0)
    make_run(tmp_path, "dp-z1-s1", clip=0.5, z=1.0, eps=43.5, fd=320.0, dist=11.0)
    make_run(tmp_path, "krum-clean-s0", rule="krum", fd=150.0, loss=0.06)
    make_run(tmp_path, "krum-attacked-s0", rule="krum", attacked=True, fd=160.0, loss=0.07)
    assert privacy_report.main([str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # By hand: FD 100, 110 -> 105 ± 7.071; near copies 0.02, 0.04 -> 0.03 ± 0.01414
    assert "105 ± 7.1" in rows["nodp"] and "0.03 ± 0.014" in rows["nodp"] and "no DP" in rows["nodp"]
    assert "∞ (no noise)" in rows["clip"]
    # dp-z1: epsilon 43.5 at delta 1e-5; FD 310 ± 14.14; nearest distance / test's 0.9, 1.1 -> 1 ± 0.1414
    assert "43.5 (1e-05)" in rows["dp-z1"] and "310 ± 14" in rows["dp-z1"] and "1 ± 0.14" in rows["dp-z1"]
    assert table.index("\n| nodp |") < table.index("\n| clip |") < table.index("\n| dp-z1 |")
    assert "| krum | 0 | 0.06 | 150 | 0.07 | 160 |" in table
    summary = json.loads((tmp_path / "summary.json").read_text())   # strict JSON: no Infinity
    clip = next(s for s in summary["privacy"] if s["cell"] == "clip")
    assert clip["epsilon"] == "inf"
    assert math.isclose(next(s for s in summary["privacy"] if s["cell"] == "dp-z1")["fd"]["std"],
                        math.sqrt(200))
    assert (tmp_path / "fd_vs_epsilon.png").stat().st_size > 0


def test_no_study_folder_is_a_one_line_error(tmp_path, capsys):
    assert privacy_report.main([str(tmp_path / "nothing")]) == 2
    assert "runs" in capsys.readouterr().err
