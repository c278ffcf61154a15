"""`feddm-hpc report`: plots and a Markdown table from run directories (files only).

One real tiny run (the session's train_tiny run, copied) is used; a second run directory is derived from it (another codec in its
config, metrics without cum_uplink_bytes) and evaluation JSONs are written by hand, so the report
is tested without paying for sampling here (test_evaluate.py covers evaluate's JSON).
"""
import json
import shutil
import sys

import pytest

from feddm_hpc.cli import main

from conftest import copy_run

PNG = b"\x89PNG\r\n\x1a\n"


def _eval(round_index, fd, n=64):
    return {"fd": fd, "kid": fd / 100, "kid_std": 0.1, "precision": 0.5, "recall": 0.25,
            "density": 0.4, "coverage": 0.3, "num_samples": n, "round": round_index,
            "feature_extractor": "lenet5-mnist-x", "feature_extractor_id": "lenet5-mnist-x-key",
            "extractor_test_accuracy": 0.9, "fid_inception": None}


@pytest.fixture(scope="module")
def runs(tiny_run_shared, tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    a = copy_run(tiny_run_shared, base / "vanilla")   # the session's train_tiny run (conftest)
    (a / "eval").mkdir()
    for r, fd in ((0, 300.0), (1, 250.0)):
        (a / "eval" / f"round-{r:06d}.json").write_text(json.dumps(_eval(r, fd)))

    b = base / "quant4"
    shutil.copytree(a, b)
    cfg = (b / "config.yaml").read_text()
    (b / "config.yaml").write_text(cfg.replace("uplink: none", "uplink: quant")
                                   .replace("bits: 8", "bits: 4")
                                   .replace("partition: iid", "partition: dirichlet"))
    lines = [json.loads(l) for l in (b / "metrics.jsonl").read_text().splitlines()]
    for rec in lines:   # an older run without the cumulative fields
        rec["uplink_bytes"] //= 8
        for key in [k for k in rec if k.startswith("cum_")]:
            del rec[key]
    (b / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (b / "eval" / "round-000001.json").write_text(json.dumps(_eval(1, 200.0)))
    return a, b, lines


@pytest.mark.slow  # module fixture `runs` trains a run
def test_report_two_runs(runs, tmp_path, capsys):
    a, b, b_lines = runs
    out = tmp_path / "rep"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert str(out / "table.md") in capsys.readouterr().out
    for name in ("loss.png", "fd.png", "fd_vs_uplink.png", "samples/vanilla.png",
                 "samples/quant4.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    table = (out / "table.md").read_text()
    rows = [l for l in table.splitlines() if l.startswith("| ") and not l.startswith("| run |")]
    assert len(rows) == 2
    assert rows[0].startswith("| vanilla | fedavg | 4 | iid | none | 2/2 |")
    assert rows[1].startswith("| quant4 | fedavg | 4 | dirichlet α=0.5 | quant 4-bit | 2/2 |")
    assert "| 250 |" in rows[0] and "| 200 |" in rows[1]      # final FD
    summary = json.loads((out / "summary.json").read_text())
    # Running sum where cum_uplink_bytes is absent; ratio against float32 updates.
    assert summary[1]["uplink_bytes"] == sum(r["uplink_bytes"] for r in b_lines)
    assert summary[0]["uplink_ratio"] == pytest.approx(1.0, abs=0.01)
    assert summary[1]["uplink_ratio"] == pytest.approx(0.125, abs=0.01)


@pytest.mark.slow  # module fixture `runs` trains a run
def test_single_run_default_out_and_comparability_note(runs, tmp_path, capsys):
    a, _, _ = runs
    single = tmp_path / "one"
    shutil.copytree(a, single)
    (single / "eval" / "round-000001.json").write_text(json.dumps(_eval(1, 250.0, n=1000)))
    assert main(["report", str(single)]) == 0
    assert (single / "report" / "table.md").is_file()
    assert main(["report", str(single), str(a), "--out", str(tmp_path / "mixed")]) == 0
    assert "different sample counts" in (tmp_path / "mixed" / "table.md").read_text()


@pytest.mark.slow  # module fixture `runs` trains a run
def test_same_names_are_disambiguated(runs, tmp_path):
    a, _, _ = runs
    for parent in ("x", "y"):
        shutil.copytree(a, tmp_path / parent / "run")
    assert main(["report", str(tmp_path / "x" / "run"), str(tmp_path / "y" / "run"),
                 "--out", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep" / "table.md").read_text()
    assert "| x/run |" in table and "| y/run |" in table


@pytest.mark.slow  # module fixture `runs` trains a run
def test_without_matplotlib_the_table_is_still_written(runs, tmp_path, monkeypatch, capsys):
    a, b, _ = runs
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import raises ImportError
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["plots skipped: matplotlib is not installed (pip install matplotlib)"]
    assert (tmp_path / "rep" / "table.md").is_file()
    assert not (tmp_path / "rep" / "loss.png").exists()


def test_not_a_run_dir_is_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not found" in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a run directory" in capsys.readouterr().err
