"""In-process runs (SerialCommunicator) of the issue-3 features: byte accounting against the bytes
that crossed the communicator, NaN rejection, empty rounds, SCAFFOLD's c = mean c_i, the
compressed downlink, personalization, and exact resume for every strategy with several codecs."""
import json

import numpy as np
import pytest

from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.compression import HEADER_SIZE
from feddm_hpc.compression.quantize import num_chunks, packed_size
from feddm_hpc.config import load_config
from feddm_hpc.federation.personalization import eval_loss, split_holdout
from feddm_hpc.federation.reports import wire_dtype
from feddm_hpc.federation.simulation import Simulation
from feddm_hpc.rundir.checkpoint import latest_valid, load_checkpoint
from feddm_hpc.rundir.runlog import RunLog

from conftest import TINY

FAST = ["system.threads=1", "system.progress=false", "sampling.num_samples=0",
        "client.local_steps=2"]
# SCAFFOLD needs plain SGD clients (config.validate rejects anything else).
SCAFFOLD_CLIENT = ["client.optimizer=sgd", "client.momentum=0", "client.grad_clip=null"]


class RecordingComm(SerialCommunicator):
    """Serial transport that records what would cross the network."""

    def __init__(self):
        self.gathered, self.broadcast = [], []

    def gather_bytes(self, payload, root=0):
        self.gathered.append(int(np.asarray(payload).size))
        return super().gather_bytes(payload, root)

    def bcast_array(self, array, root=0):
        self.broadcast.append((array.dtype, int(array.size)))


def make_sim(run_dir, overrides, comm=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(TINY, FAST + list(overrides))
    return Simulation(cfg, comm or SerialCommunicator(), run_dir, RunLog(0, run_dir, progress=False))


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def quant_size(n, bits, chunk):
    return HEADER_SIZE + 8 * num_chunks(n, chunk) + packed_size(n, bits)


@pytest.mark.slow
def test_byte_accounting_equals_the_bytes_that_crossed(tmp_path):
    comm = RecordingComm()
    sim = make_sim(tmp_path, ["federation.algorithm=scaffold", *SCAFFOLD_CLIENT, "compression.uplink=quant",
                              "compression.bits=4", "compression.error_feedback=true",
                              "compression.chunk_size=512", "compression.downlink=quant",
                              "compression.downlink_bits=8", "federation.dropout_prob=0.3",
                              "checkpoint.every=100"], comm)
    assert sim.run() == "done"
    n = sim.num_params
    lines = metrics(tmp_path)
    # Per round, a gather of the payload bytes, then one of the report scalars; the
    # checkpoint's state gather comes after the last round.
    payload_gathers = comm.gathered[0:2 * len(lines):2]
    scalar_gathers = comm.gathered[1:2 * len(lines):2]
    down = [size for dtype, size in comm.broadcast if dtype == np.uint8]
    for rec, crossed, scalars, down_payload in zip(lines, payload_gathers, scalar_gathers, down):
        arrived = len(rec["arrived"])
        assert scalars == arrived * wire_dtype(1).itemsize
        assert rec["uplink_bytes"] == crossed == sum(rec["client_uplink_bytes"].values())
        # Model update and control delta, both 4-bit with chunk scales, per arrived client.
        assert rec["uplink_bytes"] == arrived * 2 * quant_size(n, 4, 512)
        assert set(rec["client_uplink_bytes"]) == {str(c) for c in rec["arrived"]}
        assert down_payload == quant_size(n, 8, 512)
        # Every cohort client gets the model payload and the float32 server control.
        assert rec["downlink_bytes"] == len(rec["clients"]) * (down_payload + 4 * n)
        assert rec["uplink_float32_bytes"] == arrived * 2 * 4 * n
        assert rec["downlink_float32_bytes"] == len(rec["clients"]) * 2 * 4 * n
    assert lines[-1]["cum_uplink_bytes"] == sum(r["uplink_bytes"] for r in lines)
    assert lines[-1]["cum_downlink_bytes"] == sum(r["downlink_bytes"] for r in lines)
    for key in ("round", "train_loss", "uplink_bytes", "downlink_bytes", "wall_s"):
        assert all(key in r for r in lines)
    assert {"encode", "decode", "broadcast", "gather"} <= set(lines[0]["phases"])


@pytest.mark.parametrize("uplink", ["none", "quant"])
def test_nan_clients_are_rejected_and_c_stays_the_mean_of_client_controls(tmp_path, uplink):
    sim = make_sim(tmp_path, ["federation.algorithm=scaffold", *SCAFFOLD_CLIENT, f"compression.uplink={uplink}",
                              "compression.bits=4", "compression.error_feedback=true",
                              "federation.inject_nan_clients=[1]", "federation.rounds=3",
                              "federation.dropout_prob=0.25"])
    sim.run()
    lines = metrics(tmp_path)
    for rec in lines:
        assert rec["rejected"] == ([1] if 1 in rec["arrived"] else [])
        assert rec["rejected_updates"] == len(rec["rejected"])
        assert rec["aggregated_clients"] == len(rec["arrived"]) - len(rec["rejected"])
        if 1 in rec["arrived"] and uplink == "quant":  # a lossy codec cannot encode NaN: no bytes
            assert rec["client_uplink_bytes"]["1"] == 0
    assert any(rec["rejected"] for rec in lines)
    assert np.isfinite(sim.global_params).all() and np.isfinite(sim.ema).all()
    assert sim.strategy.controls.get(1) is None  # a rejected client keeps its old (zero) control
    ci = [sim.strategy.controls.get(c) if sim.strategy.controls.get(c) is not None else np.zeros(sim.num_params)
          for c in range(4)]
    np.testing.assert_allclose(sim.strategy.control, np.mean(ci, axis=0), rtol=1e-4, atol=1e-6)
    assert np.abs(sim.strategy.control).max() > 0


def test_a_round_with_no_arrival_leaves_the_model_unchanged(tmp_path):
    sim = make_sim(tmp_path, ["federation.dropout_prob=1.0", "federation.algorithm=fedadam"])
    before = sim.global_params.copy()
    sim.run()
    assert np.array_equal(sim.global_params, before) and np.array_equal(sim.ema, before)
    rec = metrics(tmp_path)[0]
    assert rec["train_loss"] is None and rec["uplink_bytes"] == 0 and rec["dropped"] == [0, 1, 2, 3]
    assert rec["downlink_bytes"] == 4 * 4 * sim.num_params


def test_personalization_report(tmp_path):
    sim = make_sim(tmp_path, ["personalization.steps=2", "personalization.eval_size=16",
                              "federation.rounds=1"])
    sim.run()
    report = json.loads((tmp_path / "personalization.json").read_text())
    assert report["steps"] == 2 and sorted(report["clients"], key=int) == ["0", "1", "2", "3"]
    for cid, entry in report["clients"].items():
        assert entry["eval_examples"] == 16
        assert np.isfinite(entry["global_loss"]) and np.isfinite(entry["personalized_loss"])
    s = sim.setup
    train_idx, eval_idx = split_holdout(0, 2, s.parts[2], 16)
    assert not set(train_idx) & set(eval_idx) and train_idx.size + 16 == s.parts[2].size
    # The evaluation is fixed per client: recomputing the global loss gives the same number.
    again = eval_loss(s.model, s.schedule, s.images, sim.global_params, eval_idx, 0, 2, s.device,
                      sim.trainer.loss_fn)   # the run's own loss (min-SNR weighted by default)
    assert again == report["clients"]["2"]["global_loss"]
    assert report["mean_global_loss"] == pytest.approx(
        np.mean([e["global_loss"] for e in report["clients"].values()]))


CASES = {
    "fedavgm-quant8-downlink4": ["federation.algorithm=fedavgm", "compression.uplink=quant",
                                 "compression.downlink=quant", "compression.downlink_bits=4"],
    "fedadam-topk-ef": ["federation.algorithm=fedadam", "compression.uplink=topk",
                        "compression.topk_fraction=0.1", "compression.error_feedback=true"],
    "fedyogi-fp16-weights": ["federation.algorithm=fedyogi", "compression.uplink=quant",
                             "compression.bits=16", "compression.target=weights"],
    "fedadagrad-2bit-stoch-ef-zlib": ["federation.algorithm=fedadagrad", "compression.uplink=quant",
                                      "compression.bits=2", "compression.stochastic_rounding=true",
                                      "compression.error_feedback=true", "compression.lossless=zlib"],
    "fedprox-stragglers": ["federation.algorithm=fedprox", "client.prox_mu=0.1",
                           "federation.straggler=lognormal", "federation.round_deadline_s=2.5"],
    "scaffold-4bit-ef-weights-dropout": ["federation.algorithm=scaffold", *SCAFFOLD_CLIENT,
                                         "compression.uplink=quant",
                                         "compression.bits=4", "compression.error_feedback=true",
                                         "compression.target=weights",
                                         "federation.dropout_prob=0.3"],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
def test_resume_is_exact(tmp_path, case):
    """3 rounds straight == 1 round, a new process-like Simulation from the checkpoint, 2 more."""
    extra = CASES[case] + ["federation.clients_per_round=3", "client.local_steps=1"]
    straight = make_sim(tmp_path / "straight", extra + ["federation.rounds=3"])
    straight.run()
    first = make_sim(tmp_path / "resumed", extra + ["federation.rounds=1"])
    first.run()
    second = make_sim(tmp_path / "resumed", extra + ["federation.rounds=3"])
    second.restore(load_checkpoint(latest_valid(tmp_path / "resumed" / "checkpoints")))
    second.run()
    assert np.array_equal(second.global_params, straight.global_params)
    assert np.array_equal(second.ema, straight.ema)
    for key, value in straight.strategy.state_dict().items():
        assert np.array_equal(second.strategy.state_dict()[key], value), key
    assert second.compressor.state_dict().keys() == straight.compressor.state_dict().keys()
    for key, value in straight.compressor.state_dict().items():
        assert np.array_equal(second.compressor.state_dict()[key], value), key
    if straight.strategy.client_state is not None:   # SCAFFOLD's c_i
        assert second.strategy.client_state.state_dict().keys() == \
            straight.strategy.client_state.state_dict().keys()
        for key, value in straight.strategy.client_state.state_dict().items():
            assert np.array_equal(second.strategy.client_state.state_dict()[key], value), key
    if straight.downlink.reference is not None:
        assert np.array_equal(second.downlink.reference, straight.downlink.reference)
    a, b = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["cum_uplink_bytes"] for r in a] == [r["cum_uplink_bytes"] for r in b]
