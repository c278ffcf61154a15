"""Partial sharing (federation.shared_parts): clients share some U-Net parts and keep the others.

The shared vector is the shared parameters' slices; the private slices stay on the rank hosting
each client, in checkpoints under private/<id>, and every guarantee of a full run holds: the
same results on 1, 2 and 3 ranks, exact resume on another rank count. Evaluation scores the
mixture of the clients' models; sampling can pick one client's model.
"""
import json

import numpy as np
import pytest
import torch

from feddm_hpc.config import load_config, shares_partly
from feddm_hpc.diffusion import parameterization as par
from feddm_hpc.diffusion import parts as unet_parts
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation.setup import build_model
from feddm_hpc.federation.shared_space import PrivateParts, SharedSpace, client_models
from feddm_hpc.params import ParamSpec, flatten
from feddm_hpc.rundir.checkpoint import load_checkpoint

from conftest import DETERMINISTIC, cli_in_process, final_params, run_cli, train_tiny

# The decoder shared, 8-bit updates with error feedback: both kinds of per-client state at once.
PARTIAL = ["--set", "federation.shared_parts=[decoder]", "--set", "compression.uplink=quant",
           "--set", "compression.bits=8", "--set", "compression.error_feedback=true"]
TIMING = {"wall_s", "phases", "sim_round_s", "client_train_s_max"}


def tiny_model(tiny_config, *sets):
    """The config and its initial model, as every rank of a run builds it."""
    config = load_config(str(tiny_config), list(sets))
    return config, build_model(config, (1, 28, 28), "cpu")


def untimed(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def checkpoint(run_dir):
    data = load_checkpoint(sorted((run_dir / "checkpoints").glob("round-*.h5"))[-1])
    return data.params, data.ema, data.clients


# -- the map between the model and the shared vector (fast) ------------------------------------

@pytest.mark.parametrize("sets", [(), ("model.parameterization=lowrank", "model.lowrank_rank=1")])
def test_every_parameter_lies_in_exactly_one_part(tiny_config, sets):
    _, model = tiny_model(tiny_config, *sets)
    names = [n for n, _ in model.named_parameters()]
    counts = {p: 0 for p in unet_parts.PARTS}
    for n in names:
        counts[unet_parts.part_of(n)] += 1
    assert all(c > 0 for c in counts.values()), counts   # no part is empty on the project U-Net
    with pytest.raises(ValueError, match="belongs to no U-Net part"):
        unet_parts.part_of("generator.weight")


def test_shared_vector_round_trips_and_counts_match(tiny_config):
    _, model = tiny_model(tiny_config)
    spec = ParamSpec.from_model(model)
    full = flatten(model)
    space = SharedSpace(spec, ("decoder",))
    shared = space.take(full)
    by_name = dict(model.named_parameters())
    expected = sum(p.numel() for n, p in by_name.items() if unet_parts.part_of(n) in ("up", "output"))
    assert shared.size == space.size == expected
    assert space.size + space.private_size == full.size
    rebuilt = np.zeros_like(full)
    space.put(shared, rebuilt)
    space.put_private(space.take_private(full), rebuilt)
    assert np.array_equal(rebuilt, full)
    # the shared slices are the decoder's parameters, in parameter order
    want = np.concatenate([p.detach().numpy().ravel() for n, p in by_name.items()
                           if unet_parts.part_of(n) in ("up", "output")])
    assert np.array_equal(shared, want)
    size = par.shared_size(model, "dense", ("decoder",))
    assert (size.shared, size.trained, size.parts) == (space.size, full.size, ("up", "output"))


def test_full_sharing_is_the_identity_without_copies(tiny_config):
    _, model = tiny_model(tiny_config)
    full = flatten(model)
    for names in (("all",), ("time_embedding", "input", "down", "middle", "up", "output"),
                  ("encoder", "decoder")):
        space = SharedSpace(ParamSpec.from_model(model), names)
        assert space.identity and space.take(full) is full
        private = PrivateParts(space, full)
        assert private.start(3, full) is full and private.state_dict() == {}


def composed(store, client_id, shared):
    """A client's start as one numpy vector (the trainer writes the pieces into the model)."""
    return store.start(client_id, shared).compose()


def test_private_parts_compose_keep_and_restore_by_client(tiny_config):
    _, model = tiny_model(tiny_config)
    init = flatten(model)
    space = SharedSpace(ParamSpec.from_model(model), ("up",))
    store = PrivateParts(space, init)
    shared = np.full(space.size, 7.0, dtype=np.float32)
    start = composed(store, 2, shared)   # a client that never trained: the initial private values
    assert np.array_equal(space.take(start), shared)
    assert np.array_equal(space.take_private(start), space.take_private(init))
    local = start + 1.0
    store.keep(2, local)
    again = composed(store, 2, shared)
    assert np.array_equal(space.take_private(again), space.take_private(local))
    assert np.array_equal(space.take_private(composed(store, 1, shared)), space.take_private(init))
    moved = PrivateParts(space, init)
    moved.load_state_dict(store.state_dict(), client_ids=[0, 1])   # client 2 lives elsewhere
    assert moved.state_dict() == {}
    moved.load_state_dict(store.state_dict(), client_ids=[2])
    assert np.array_equal(moved.of(2), store.of(2))
    models = client_models(space, init, store.state_dict(), 3)
    assert np.array_equal(space.take_private(models[2]), space.take_private(local))
    assert np.array_equal(models[0], init)


# -- what partial sharing refuses (fast) -------------------------------------------------------

@pytest.mark.parametrize("sets, field", [
    (["federation.shared_parts=[]"], "federation.shared_parts: must name"),
    (["federation.shared_parts=[decoder, wings]"], "federation.shared_parts: invalid value 'wings'"),
    (["federation.shared_parts=up"], "federation.shared_parts: expected a list"),
    (["federation.shared_parts=[up]", "model.parameterization=hyper"],
     "federation.shared_parts: the hypernetwork"),
    (["federation.shared_parts=[up]", "federation.algorithm=scaffold", "client.optimizer=sgd",
      "client.momentum=0", "client.grad_clip=null"], "federation.shared_parts: scaffold"),
    (["federation.shared_parts=[up]", "personalization.steps=5"], "personalization.steps"),
    (["federation.shared_parts=[up]", "system.client_group_size=2"], "system.client_group_size"),
    (["federation.shared_parts=[up]", "system.placement=per_round"], "system.placement"),
])
def test_bad_partial_sharing_is_refused_naming_the_field(tiny_config, sets, field):
    with pytest.raises(ConfigError) as err:
        load_config(str(tiny_config), sets)
    assert str(err.value).startswith(field), str(err.value)


def test_presets_covering_everything_are_full_sharing(tiny_config):
    assert not shares_partly(load_config(str(tiny_config), ["federation.shared_parts=[encoder, decoder]"]))
    assert shares_partly(load_config(str(tiny_config), ["federation.shared_parts=[latent_decoder]"]))


def test_validate_reports_the_shared_part_and_exits_2_on_a_bad_one(tiny_config):
    out = cli_in_process(["validate", str(tiny_config), "--set", "federation.shared_parts=[decoder]"])
    assert out.returncode == 0, out.stderr
    assert "shared parts up, output" in out.stdout and "the rest per client" in out.stdout
    bad = cli_in_process(["validate", str(tiny_config), "--set", "federation.shared_parts=[head]"])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "federation.shared_parts" in bad.stderr


# -- runs under MPI ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("partial") / "np1", *PARTIAL)


@pytest.mark.slow
def test_partial_run_shares_the_decoder_and_keeps_the_rest_per_client(serial, tiny_config):
    config, model = tiny_model(tiny_config, "federation.shared_parts=[decoder]")
    space = SharedSpace(ParamSpec.from_model(model), config.federation.shared_parts)
    init = flatten(model)
    params, ema, clients = checkpoint(serial)
    privates = {k: v for k, v in clients.items() if k.startswith("private/")}
    assert sorted(privates) == [f"private/{c}" for c in range(4)]
    # the global model's private slices never move; the shared ones trained
    assert np.array_equal(space.take_private(params), space.take_private(init))
    assert not np.array_equal(space.take(params), space.take(init))
    # each client trained its own private parts from the same start: all differ
    values = [privates[f"private/{c}"] for c in range(4)]
    assert all(not np.array_equal(values[0], v) for v in values[1:])
    for rec in untimed(serial):
        assert rec["shared_params"] == space.size and rec["shared_parts"] == ["up", "output"]
        assert rec["uplink_float32_bytes"] == 4 * space.size * 4
        for b in rec["client_uplink_bytes"].values():   # 8 bits a shared value plus a header
            assert space.size <= b < space.size + 256


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_partial_run_is_rank_count_invariant(serial, tmp_path, nprocs):
    run_dir = train_tiny(tmp_path / f"np{nprocs}", *PARTIAL, nprocs=nprocs)
    a, b = checkpoint(serial), checkpoint(run_dir)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert sorted(a[2]) == sorted(b[2]) and all(np.array_equal(a[2][k], b[2][k]) for k in a[2])
    assert untimed(run_dir) == untimed(serial)


@pytest.mark.slow
@pytest.mark.mpi
def test_partial_run_resumes_exactly_on_another_rank_count(serial, tmp_path):
    run_dir = train_tiny(tmp_path / "resumed", *PARTIAL, "--set", "federation.rounds=1", nprocs=2)
    out = run_cli(["resume", str(run_dir), *DETERMINISTIC, "--set", "federation.rounds=2"], nprocs=3)
    assert out.returncode == 0, out.stderr
    a, b = checkpoint(serial), checkpoint(run_dir)
    assert np.array_equal(final_params(run_dir), final_params(serial))
    assert all(np.array_equal(a[2][k], b[2][k]) for k in a[2])
    assert untimed(run_dir) == untimed(serial)


@pytest.mark.slow
@pytest.mark.mpi
def test_evaluate_scores_the_mixture_of_client_models_on_any_rank_count(serial, shared_feature_cache,
                                                                        tmp_path):
    ckpt = sorted((serial / "checkpoints").glob("round-*.h5"))[-1]
    # The session's FEDDM_HPC_CACHE (tests/conftest.py), never the user's: the quick LeNet (1 epoch,
    # 2,000 images) is test_evaluate's, trained once per session.
    cache = {"FEDDM_HPC_CACHE": str(shared_feature_cache)}
    results = []
    for nprocs in (1, 2):
        out_json = tmp_path / f"eval{nprocs}.json"
        out = run_cli(["evaluate", str(ckpt), "--num-samples", "40", "--steps", "5",
                       "--extractor-epochs", "1", "--extractor-train-subset", "2000",
                       "--no-memorization", "--out", str(out_json), *DETERMINISTIC],
                      nprocs=nprocs, env_extra=cache)
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out_json.read_text()))
    one, two = results
    assert one["fd"] == two["fd"] and one["mixture"] == two["mixture"]
    mix = one["mixture"]
    assert mix["clients"] == [0, 1, 2, 3] and mix["samples"] == [10, 10, 10, 10]
    assert all(f is not None and f > 0 for f in mix["fd_own_data"])
    assert mix["fd_own_data_mean"] == pytest.approx(np.mean(mix["fd_own_data"]))


@pytest.mark.slow
def test_sample_draws_one_client_or_all_and_refuses_client_on_full_runs(serial, tmp_path):
    from feddm_hpc.cli.sample import draw_checkpoint_samples

    ckpt = sorted((serial / "checkpoints").glob("round-*.h5"))[-1]
    mixed = draw_checkpoint_samples(ckpt, 8, steps=3, device="cpu")[0]
    c1 = draw_checkpoint_samples(ckpt, 2, steps=3, device="cpu", client=1)[0]
    c0 = draw_checkpoint_samples(ckpt, 2, steps=3, device="cpu", client=0)[0]
    # all clients, 2 each in client order: client 1's block is its own model's first 2 samples
    assert torch.equal(mixed[2:4], c1) and torch.equal(mixed[0:2], c0)
    assert not torch.equal(c0, c1)
    out = cli_in_process(["sample", str(ckpt), "--num", "2", "--steps", "2", "--client", "9",
                   "--out", str(tmp_path / "x.png")])
    assert out.returncode == 2 and "--client" in out.stderr
