"""Round callbacks: order, stopping, and the read-only view they get."""
import numpy as np
import pytest

from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.config import load_config
from feddm_hpc.federation.callbacks import RoundCallback, RoundLog, standard_callbacks
from feddm_hpc.federation.simulation import Simulation
from feddm_hpc.rundir.checkpoint import latest_valid, load_checkpoint
from feddm_hpc.rundir.runlog import RunLog

from conftest import TINY

pytestmark = pytest.mark.slow  # each test trains a tiny run

FAST = ["system.threads=1", "system.progress=false", "sampling.num_samples=0",
        "client.local_steps=1", "federation.rounds=4", "checkpoint.every=10"]


def make_sim(run_dir):
    run_dir.mkdir(parents=True, exist_ok=True)
    return Simulation(load_config(TINY, FAST), SerialCommunicator(), run_dir,
                      RunLog(0, run_dir, progress=False))


class Recorder(RoundCallback):
    def __init__(self, events, name, stop_at=None):
        self.events, self.name, self.stop_at = events, name, stop_at

    def after_round(self, view, round_index, record):
        self.events.append((self.name, round_index, record["round"]))
        with pytest.raises(ValueError):       # callbacks cannot write the model
            view.global_params[0] = 1.0
        return round_index == self.stop_at

    def at_end(self, view):
        self.events.append((self.name, "end", None))


def test_callbacks_run_in_order_after_every_round_and_at_the_end(tmp_path):
    events = []
    sim = make_sim(tmp_path)
    assert sim.run([RoundLog(), Recorder(events, "a"), Recorder(events, "b")]) == "done"
    assert events == [(n, r, r) for r in range(4) for n in "ab"] + [("a", "end", None), ("b", "end", None)]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_a_callback_asking_to_stop_ends_the_run_after_a_checkpoint_of_that_round(tmp_path):
    events = []
    sim = make_sim(tmp_path)
    # Every callback of the round still runs; at_end does not.
    assert sim.run([RoundLog(), Recorder(events, "a", stop_at=1), Recorder(events, "b")]) == "stopped"
    assert events == [("a", 0, 0), ("b", 0, 0), ("a", 1, 1), ("b", 1, 1)]
    data = load_checkpoint(latest_valid(tmp_path / "checkpoints"))
    assert data.round == 1 and np.array_equal(data.params, sim.global_params)
    assert len(data.metrics_lines) == 2


def test_the_stop_flag_is_read_between_rounds_but_never_after_the_last(tmp_path):
    calls = []

    def requested():
        calls.append(1)
        return False
    sim = make_sim(tmp_path)
    assert sim.run(standard_callbacks(requested)) == "done"
    assert len(calls) == 3      # rounds 0..2; after the last round there is nothing to stop
