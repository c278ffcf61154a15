"""Pipelined rounds (system.pipeline_clients, rank_training.RankTraining.run): a rank launches its
next client's first step before it finishes (waits for, encodes and sends) the previous one.

On a GPU that is what lets the device->host copy and the encoding overlap training
(federation/readback.py; the copy on a side stream is checked on fake CUDA tensors in
tests/device/test_readback_stream.py). The order must change no result, with every mechanism
that keeps per-client or per-round state on the uplink: forced on here on the CPU, runs are
bit-identical to the one-client-at-a-time order, on 1 rank and on 2 ranks under mpiexec.
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from feddm_hpc.config import load_config
from feddm_hpc.federation.client import LocalTrainer
from feddm_hpc.federation.phases import Phases
from feddm_hpc.federation.rank_training import RankTraining, pipelines_clients
from feddm_hpc.federation.readback import HostReadback, HostVectors
from feddm_hpc.rundir.checkpoint import load_checkpoint

from conftest import train_tiny

TIMING = {"wall_s", "phases", "sim_round_s", "client_train_s_max"}
ROUNDS = ["--set", "federation.rounds=2", "--set", "sampling.num_samples=0"]
# Each case combines mechanisms whose state a reordering could disturb: error-feedback residuals
# and private parts (per client), DP noise and secure-aggregation masks (drawn per client and
# round), SCAFFOLD's control variates, a data attack and a NaN client rejected by the server.
CASES = {
    "partial-q8-ef": ["federation.shared_parts=[decoder]", "compression.uplink=quant",
                      "compression.bits=8", "compression.error_feedback=true"],
    "secure-dp-attack": ["privacy.clip_norm=0.5", "privacy.noise_multiplier=0.5",
                         "privacy.secure_aggregation=true", "privacy.secagg_range=0.05",
                         "compression.uplink=quant", "compression.bits=8", "attack.kind=gaussian",
                         "attack.clients=[1]", "attack.scale=0.01"],
    "scaffold-topk-ef": ["federation.algorithm=scaffold", "client.optimizer=sgd", "client.lr=0.05",
                         "client.momentum=0", "client.grad_clip=null",
                         "compression.uplink=topk", "compression.topk_fraction=0.1",
                         "compression.error_feedback=true"],
    "labelflip-dp-nan": ["attack.kind=label_flip", "attack.clients=[0]", "privacy.clip_norm=0.5",
                         "federation.inject_nan_clients=[3]"],
}


def sets(*overrides):
    return [a for o in overrides for a in ("--set", o)]


def outcome(run_dir):
    """Everything a run decides: final parameters, EMA, per-client and strategy state, metrics."""
    data = load_checkpoint(sorted((run_dir / "checkpoints").glob("round-*.h5"))[-1])
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    metrics = [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]
    return data.params, data.ema, data.clients, data.strategy, metrics


def assert_same(a, b):
    pa, ea, ca, sa, ma = a
    pb, eb, cb, sb, mb = b
    assert np.array_equal(pa, pb) and np.array_equal(ea, eb)
    assert sorted(ca) == sorted(cb) and all(np.array_equal(ca[k], cb[k]) for k in ca)
    assert sorted(sa) == sorted(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert ma == mb


# -- the setting -------------------------------------------------------------------------------

def test_auto_pipelines_on_a_gpu_only(tiny_config):
    cfg = load_config(str(tiny_config))
    assert cfg.system.pipeline_clients == "auto"
    assert pipelines_clients(cfg.system, "cuda:1") and not pipelines_clients(cfg.system, "cpu")
    on = load_config(str(tiny_config), ["system.pipeline_clients=true"])
    off = load_config(str(tiny_config), ["system.pipeline_clients=false"])
    assert pipelines_clients(on.system, "cpu") and not pipelines_clients(off.system, "cuda")


# -- the order (a recording trainer, no model) ---------------------------------------------------

class RecordingTrainer:
    """launch/finish of LocalTrainer's shape, logging the order of events."""

    def __init__(self, log):
        self.log = log

    def pipeline(self):
        self.log.append("two host vectors")

    def stage(self, start):
        self.log.append("stage")
        return start

    def launch(self, start, cid, indices, round_index, terms=(), poison=None, after_first_step=None):
        self.log.append(f"launch {cid}")
        if after_first_step is not None:
            after_first_step()
        self.log.append(f"launched {cid}")
        log = self.log

        class Launched:
            def finish(self):
                log.append(f"finish {cid}")
                return np.full(3, cid, dtype=np.float32), SimpleNamespace(client_id=cid)
        return Launched()


def rank_training(log, pipelined):
    identity = SimpleNamespace(start=lambda cid, start: start, split=lambda cid, local: local,
                               space=SimpleNamespace(identity=True))
    setup = SimpleNamespace(group_size=1, parts={c: np.arange(4) for c in range(4)})
    grouping = lambda plan: [[c] for c in plan]   # noqa: E731
    return RankTraining(RecordingTrainer(log), setup, grouping, identity, lambda c: (),
                        lambda c: None, None, pipelined=pipelined)


@pytest.mark.parametrize("pipelined", [False, True])
def test_clients_are_delivered_in_id_order_after_the_next_ones_first_step(pipelined):
    log = []
    training = rank_training(log, pipelined)
    delivered = []

    def deliver(local, result, train_s):
        assert local[0] == result.client_id and train_s >= 0
        delivered.append(result.client_id)
        log.append(f"deliver {result.client_id}")

    phases = Phases()
    training.run([0, 1, 2], np.zeros(3, dtype=np.float32), 0, deliver, phases)
    assert delivered == [0, 1, 2]
    if pipelined:
        assert log == ["two host vectors", "stage",
                       "launch 0", "launched 0",
                       "launch 1", "finish 0", "deliver 0", "launched 1",
                       "launch 2", "finish 1", "deliver 1", "launched 2",
                       "finish 2", "deliver 2"]
    else:
        assert log == ["stage", "launch 0", "launched 0", "finish 0", "deliver 0",
                       "launch 1", "launched 1", "finish 1", "deliver 1",
                       "launch 2", "launched 2", "finish 2", "deliver 2"]
    assert {"train", "train_cpu"} <= set(phases.rounded())


def test_an_empty_round_delivers_nothing():
    delivered = []
    rank_training([], True).run([], np.zeros(3), 0, lambda *a: delivered.append(a), Phases())
    assert delivered == []


# -- the trainer's host vectors -----------------------------------------------------------------

def test_host_vectors_are_reused_in_turn():
    vectors = HostVectors(5, count=2)
    first, second, third = vectors.take(), vectors.take(), vectors.take()
    assert first.data_ptr() != second.data_ptr() and third.data_ptr() == first.data_ptr()


def test_a_pipelined_trainer_keeps_two_vectors_and_each_holds_its_client(tiny_config):
    """Two launched clients are both intact when finished late (the second's training does not
    overwrite the first's vector), and finishing gives what train() gives."""
    from feddm_hpc.diffusion.schedule import make_schedule
    from feddm_hpc.diffusion.unet import build_unet
    cfg = load_config(str(tiny_config), ["client.local_steps=2", "client.batch_size=4"])
    torch.manual_seed(0)
    model = build_unet(cfg.model, 1, 28)
    images = torch.randint(0, 255, (16, 1, 28, 28), dtype=torch.uint8)
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
    trainer = LocalTrainer(model, schedule, cfg.client, images, "cpu", seed=3)
    start = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    reference = []
    for c in (0, 1):   # one-at-a-time: each vector read before the next client trains
        vector, result = trainer.train(start, c, np.arange(16), 0)
        reference.append((vector.copy(), result))
    assert not np.array_equal(reference[0][0], reference[1][0])
    trainer.pipeline()
    assert isinstance(trainer.readback, HostReadback) and len(trainer.readback.host.tensors) == 2
    launched = [trainer.launch(start, c, np.arange(16), 0) for c in (0, 1)]
    for (vector, result), late in zip(reference, launched):
        got, got_result = late.finish()
        assert np.array_equal(got, vector) and got_result == result


# -- whole runs: the order changes nothing --------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(set(CASES) - {"partial-q8-ef"}))   # that one: 2 ranks below
def test_pipelined_runs_equal_one_client_at_a_time(tmp_path, case):
    extra = [*ROUNDS, *sets(*CASES[case])]
    serial = train_tiny(tmp_path / "serial", *extra, *sets("system.pipeline_clients=false"))
    piped = train_tiny(tmp_path / "piped", *extra, *sets("system.pipeline_clients=true"))
    assert_same(outcome(serial), outcome(piped))


@pytest.mark.slow
@pytest.mark.mpi
def test_pipelined_streamed_two_ranks_equal_one_rank_one_client_at_a_time(tmp_path):
    """2 ranks, each pipelining its clients while streaming their payloads to the root."""
    extra = [*ROUNDS, *sets(*CASES["partial-q8-ef"])]
    serial = train_tiny(tmp_path / "serial", *extra, *sets("system.pipeline_clients=false"))
    piped = train_tiny(tmp_path / "piped", *extra, *sets("system.pipeline_clients=true",
                                                         "system.stream_uplink=true"), nprocs=2)
    assert_same(outcome(serial), outcome(piped))
