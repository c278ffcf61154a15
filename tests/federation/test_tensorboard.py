"""logging.tensorboard: event files under RUN_DIR/tensorboard whose scalars, read back with
tensorboard's own EventAccumulator, equal metrics.jsonl and the evaluation JSON; sample grids as
images; a no-op when off; a clear exit-2 error when tensorboard is not installed."""
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from feddm_hpc.config import Config, config_from_tree
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.tensorboard_log import LOGDIR, TensorBoardLog, eval_scalars, round_scalars

from conftest import DETERMINISTIC, TINY, cli_in_process, train_tiny

RECORD = {"round": 3, "train_loss": 0.25, "clients": [0, 2], "arrived": [0], "dropped": [2],
          "aggregated_clients": 1, "uplink_bytes": 100, "cum_downlink_bytes": 400, "wall_s": 1.5,
          "phases": {"train": 1.25, "gather": 0.5}, "epsilon": 3.0, "client_loss": {"0": 0.2},
          "client_metrics": "withheld", "new_number": 7, "flag": True, "nothing": None}


def test_round_scalars_map_every_number_of_the_record():
    assert round_scalars(RECORD) == {
        "train/loss": 0.25, "clients/clients": 2.0, "clients/arrived": 1.0, "clients/dropped": 1.0,
        "clients/aggregated_clients": 1.0, "bytes/uplink_bytes": 100.0,
        "bytes/cum_downlink_bytes": 400.0, "time/wall_s": 1.5, "phases/train": 1.25,
        "phases/gather": 0.5, "privacy/epsilon": 3.0, "round/new_number": 7.0}
    assert eval_scalars({"fd": 2.5, "kid": 0.1, "round": 3, "num_samples": 16, "fid_inception": None,
                         "class_histogram": [0.5, 0.5], "_samples": 1.0}) == {"eval/fd": 2.5, "eval/kid": 0.1}


def test_off_by_default_it_writes_nothing(tmp_path):
    view = SimpleNamespace(cfg=Config(), comm=SimpleNamespace(rank=0), run_dir=tmp_path, start_round=0)
    callback = TensorBoardLog()
    assert callback.after_round(view, 0, RECORD) is False
    callback.at_end(view)
    assert not (tmp_path / LOGDIR).exists() and callback.writer is None


def test_without_tensorboard_the_option_fails_at_start_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^logging.tensorboard: .*pip install tensorboard"):
        config_from_tree({"logging": {"tensorboard": True}})
    config_from_tree({"logging": {"tensorboard": False}})


def read_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / LOGDIR), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    images = {tag: acc.Images(tag) for tag in acc.Tags()["images"]}
    return scalars, images


def expected_scalars(run_dir: Path):
    want = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for tag, value in round_scalars(record).items():
            want.setdefault(tag, {})[record["round"]] = value
    return want


def assert_equal_as_float32(got: dict, want: dict):
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))
    for tag in want:
        assert got[tag].keys() == want[tag].keys(), tag
        for step, value in want[tag].items():
            assert np.float32(got[tag][step]) == np.float32(value), (tag, step)


@pytest.mark.slow  # trains a 2-round tiny run with evaluation
def test_events_equal_the_metrics_evaluation_and_grids(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    sets = ["logging.tensorboard=true", "sampling.every=1", "sampling.num_samples=4",
            "evaluation.every=2", "evaluation.num_samples=8", "evaluation.extractor_epochs=1",
            "evaluation.extractor_max_train=200"]
    out = cli_in_process(["train", str(TINY), "--run-dir", str(run), *DETERMINISTIC,
                          *[a for s in sets for a in ("--set", s)]],
                         env_extra={"FEDDM_HPC_CACHE": str(tmp_path / "cache")})  # the LeNet, kept apart
    assert out.returncode == 0, out.stderr
    scalars, images = read_events(run)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scores = json.loads((run / "eval" / "round-000001.json").read_text())
    want = expected_scalars(run)
    want.update({tag: {1: v} for tag, v in eval_scalars(scores).items()})
    assert_equal_as_float32(scalars, want)
    # The list, spelled out: loss, bytes up and down, phase times, evaluation scores.
    for r, record in enumerate(metrics):
        assert scalars["train/loss"][r] == pytest.approx(record["train_loss"], rel=1e-6)
        assert scalars["bytes/uplink_bytes"][r] == record["uplink_bytes"]
        assert scalars["bytes/downlink_bytes"][r] == record["downlink_bytes"]
        assert scalars["phases/train"][r] == pytest.approx(record["phases"]["train"], rel=1e-6)
    assert scalars["eval/fd"][1] == pytest.approx(scores["fd"], rel=1e-6)
    grids = images["samples"]
    assert [e.step for e in grids] == [0, 1]  # sampling.every=1: round 0, then the final grid
    from feddm_hpc.rundir.imaging import read_png
    final = read_png(run / "samples" / "round-000001.png")
    assert (grids[1].height, grids[1].width) == final.shape[:2]


@pytest.mark.slow  # trains a 2-round tiny run
def test_dp_runs_log_epsilon_and_no_withheld_loss(tmp_path):
    pytest.importorskip("tensorboard")
    run = train_tiny(tmp_path / "run", "--set", "logging.tensorboard=true", "--set", "sampling.num_samples=0",
                     "--set", "privacy.clip_norm=1.0", "--set", "privacy.noise_multiplier=0.5")
    scalars, images = read_events(run)
    assert_equal_as_float32(scalars, expected_scalars(run))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [scalars["privacy/epsilon"][r] for r in (0, 1)] == \
        pytest.approx([m["epsilon"] for m in metrics], rel=1e-6)
    assert "train/loss" not in scalars and not images
