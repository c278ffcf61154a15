"""`feddm-hpc study SPEC --copy-done DIR`: complete runs without checkpoints, a folder that
reports and that a continued study skips."""
from synthetic import load, make_run, write_spec

from feddm_hpc.cli import main
from feddm_hpc.study.runs import inspect_run, plan_runs

SPEC = """\
name: synth
seeds: [0, 1]
set: {federation.rounds: 2}
cells:
  base: {}
  q8: {compression.uplink: quant, compression.bits: 8}
evaluate: {at: all, num_samples: 64}
"""


def test_copy_done_copies_complete_runs_without_checkpoints(tmp_path, capsys):
    path = write_spec(tmp_path, SPEC)
    spec = load(path)
    out, dest = tmp_path / "out", tmp_path / "results"
    for cell in ("base", "q8"):
        make_run(spec, out, cell, 0, ckpts=[0, 1], evals={0: 200.0, 1: 100.0})
    make_run(spec, out, "base", 1, ckpts=[0, 1], evals={0: 210.0})      # round 1 not evaluated
    make_run(spec, out, "q8", 1, rounds_done=1, ckpts=[0])              # still training
    assert main(["study", str(path), "--out", str(out), "--copy-done", str(dest)]) == 0
    assert "copied 2 complete run(s)" in capsys.readouterr().out
    states = {(p.cell, p.seed): inspect_run(spec, p).state for p in plan_runs(spec, dest)}
    assert states == {("base", 0): "done", ("q8", 0): "done", ("base", 1): "train", ("q8", 1): "train"}
    copied = dest / "runs" / "base" / "seed0"
    assert not (copied / "checkpoints").exists()
    assert sorted(p.name for p in copied.iterdir()) == ["config.yaml", "eval", "metrics.jsonl"]
    assert (copied / "eval" / "round-000001.json").read_bytes() == \
        (out / "runs" / "base" / "seed0" / "eval" / "round-000001.json").read_bytes()
    # nothing new: nothing copied; the copy reports on its own
    assert main(["study", str(path), "--out", str(out), "--copy-done", str(dest)]) == 0
    assert "copied 0 complete run(s)" in capsys.readouterr().out
    assert main(["study", str(path), "--out", str(dest), "--collect"]) == 0
    assert "| base |" in (dest / "table.md").read_text()


def test_copy_done_into_its_own_folder_is_refused(tmp_path, capsys):
    path = write_spec(tmp_path, SPEC)
    assert main(["study", str(path), "--out", str(tmp_path / "o"), "--copy-done",
                 str(tmp_path / "o")]) == 2
    assert "--copy-done" in capsys.readouterr().err
