"""The privacy and robustness mechanisms as the simulator wires them: the client uplink (attack,
clipping, masked encoding), the secure-aggregation transport and the per-round aggregation rules
(serial communicator, no training)."""
import dataclasses

import numpy as np
import pytest

from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.compression import make_compressor
from feddm_hpc.config import load_config
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation import aggregation, server
from feddm_hpc.federation import reports as wire
from feddm_hpc.federation.attacks import DataPoison
from feddm_hpc.federation.transports import SecureGatherTransport
from feddm_hpc.federation.uplink import build_uplink
from feddm_hpc.privacy import accounting, dp, secagg

from conftest import TINY

N = 64
ZERO = np.zeros(N, np.float32)   # a client's start: its update is then its local vector


def cfg(*sets):
    return load_config(TINY, list(sets))


def updates(k, seed=0, scale=0.01):
    rng = np.random.default_rng(seed)
    return {c: (scale * rng.standard_normal(N)).astype(np.float32) for c in range(k)}


def test_attack_then_clip_act_only_on_the_named_clients():
    c = cfg("attack.kind=sign_flip", "attack.clients=[1]", "privacy.clip_norm=0.05")
    up = build_uplink(c, make_compressor(c.compression))
    assert up.names == ("delta", "attack", "clip", "encode")
    u = updates(2, scale=1.0)
    honest = up.send(0, 0, [0, 1], ZERO, u[0])   # .vector: what the codec encoded
    flipped = up.send(1, 0, [0, 1], ZERO, u[1])
    np.testing.assert_allclose(honest.vector, u[0] * (0.05 / np.linalg.norm(u[0].astype(np.float64))), rtol=1e-6)
    np.testing.assert_allclose(flipped.vector, -u[1] * (0.05 / np.linalg.norm(u[1].astype(np.float64))), rtol=1e-6)
    assert flipped.update_norm == pytest.approx(np.linalg.norm(u[1].astype(np.float64)))
    assert flipped.clipped and honest.clipped
    assert DataPoison(c).of(1) is None   # sign_flip attacks the update, not the data


def test_label_flip_poisons_only_the_attacked_clients_batches():
    c = cfg("attack.kind=label_flip", "attack.clients=[2]")
    poison = DataPoison(c)
    assert poison.of(0) is None
    assert build_uplink(c, make_compressor(c.compression)).names == ("delta", "encode")
    x = np.array([-1.0, 0.25, 1.0])
    np.testing.assert_array_equal(poison.of(2)(x), [1.0, -0.25, -1.0])


def test_without_mechanisms_the_uplink_is_the_codec():
    c = cfg("compression.uplink=quant", "compression.bits=8")
    comp = make_compressor(c.compression)
    up = build_uplink(c, make_compressor(c.compression))
    u = updates(1)[0]
    assert up.names == ("delta", "encode")
    out = up.send(0, 3, [0], ZERO, u, loss=0.25, num_samples=7)
    assert (out.loss, out.num_samples) == (0.25, 7) and np.isnan(out.update_norm)   # no clip stage
    from feddm_hpc import seeding
    np.testing.assert_array_equal(out.payload,
                                  comp.encode(u, 0, seeding.numpy_rng(c.seed, seeding.ENCODE, 3, 0)))


def _secure_round(c, cohort, arrived, r=2, codes_out=None, at_root=None):
    """Clients encode through the uplink; returns (reduced, plain code sum of the arrivals).
    codes_out (a dict): gets each arrival's plain grid codes; at_root: called just before the
    root's reduce (the clients have encoded by then)."""
    up = build_uplink(c, make_compressor(c.compression))
    u = updates(max(cohort) + 1, seed=r)
    reps, plain = [], np.zeros(N, dtype=np.uint32)
    from feddm_hpc import seeding
    for cid in arrived:
        out = up.send(cid, r, cohort, ZERO, u[cid], loss=0.5, num_samples=100)
        assert np.isnan(out.loss) and out.num_samples == 0   # stated masked, not in the clear
        payload = out.payload
        codes = secagg.encode_grid(u[cid], c.compression.bits, c.privacy.secagg_range,
                                   seeding.numpy_rng(c.seed, seeding.ENCODE, r, cid))
        assert not np.array_equal(payload.view(np.uint32), codes)   # what travels is masked
        plain += codes
        if codes_out is not None:
            codes_out[cid] = codes
        reps.append(wire.make_report(cid, 100, 0.5, 0.1, payload, (), 0))
    t = SecureGatherTransport(N, 0, "update", seed=c.seed, bits=c.compression.bits,
                              clip_range=c.privacy.secagg_range)
    rule = aggregation.round_aggregation(c, r, cohort)
    if at_root is not None:
        at_root()
    return t.reduce(SerialCommunicator(), reps, np.zeros(N, np.float32), {}, rule), plain


_DECODE_GRID_SUM = secagg.decode_grid_sum   # the real one, whatever a test patches
SECURE = ("privacy.secure_aggregation=true", "privacy.secagg_range=0.05", "compression.uplink=quant",
          "compression.bits=8", "federation.num_clients=6")


def _no_single_decode(monkeypatch, calls):
    """Spies on secagg.decode_grid_sum (appends (codes, num_clients) to calls) and makes every other way the root
    could decode one client's payload fail the test: the codec decoders (compression's
    decode_payload, by each name it is bound to, and Compressor.decode) and server.aggregate,
    which decodes client by client. Each trap is reached by a transport that decodes per client
    (checked against such broken transports when the test was written)."""
    from feddm_hpc import compression
    from feddm_hpc.compression import base

    real = secagg.decode_grid_sum

    def spy(sum_codes, bits, clip_range, num_clients):
        calls.append((np.array(sum_codes), num_clients))
        return real(sum_codes, bits, clip_range, num_clients)

    def trap(name):
        return lambda *a, **k: pytest.fail(f"the root called {name} under secure aggregation")
    monkeypatch.setattr(secagg, "decode_grid_sum", spy)
    for module in (server, compression, base):
        monkeypatch.setattr(module, "decode_payload", trap("decode_payload"))
    monkeypatch.setattr(base.Compressor, "decode", trap("Compressor.decode"))
    monkeypatch.setattr(server, "aggregate", trap("server.aggregate"))


@pytest.mark.parametrize("arrived", [(0, 1, 2, 3, 4), (0, 2, 3, 4), (1, 3, 4)])
def test_secure_aggregate_equals_the_unmasked_one_bit_for_bit(arrived, monkeypatch):
    c = cfg(*SECURE)
    codes, decoded = {}, []
    reduced, plain = _secure_round(c, (0, 1, 2, 3, 4), arrived, codes_out=codes,
                                   at_root=lambda: _no_single_decode(monkeypatch, decoded))
    # The root decoded exactly one thing: the sum over the arrivals (never num_clients=1 for a
    # cohort of several), equal to the plain codes' sum.
    assert [m for _, m in decoded] == [len(arrived)]
    np.testing.assert_array_equal(decoded[0][0], plain)
    expected = (_DECODE_GRID_SUM(plain, 8, 0.05, len(arrived)) / len(arrived)).astype(np.float32)
    np.testing.assert_array_equal(reduced.aggregate.mean_update, expected)   # uniform mean
    assert reduced.aggregate.accepted == list(arrived)
    assert reduced.aggregate.protocol_bytes[0] > 0
    # What the root holds of each client is its masked payload, not its grid codes.
    for cid in arrived:
        held = reduced.reports[cid].update.view(np.uint32)[:N]
        assert held.size == N and not np.array_equal(held, codes[cid])


def test_secure_aggregation_below_threshold_aggregates_nothing_and_says_why():
    reduced, _ = _secure_round(cfg(*SECURE), (0, 1, 2, 3, 4), (0, 4))
    agg = reduced.aggregate
    assert agg.mean_update is None and agg.accepted == []
    assert "threshold" in agg.fields["secure_aggregation_failed"]


def test_dp_mean_adds_seeded_noise_of_std_z_c_over_the_cohort_and_reports_epsilon():
    c = cfg("privacy.clip_norm=0.5", "privacy.noise_multiplier=2.0", "federation.num_clients=10",
            "federation.clients_per_round=4")
    rule = aggregation.round_aggregation(c, 3, (1, 4, 6, 9))
    total = np.zeros(200_000)
    mean = rule.finish(total, 4.0)
    # By hand: std z*C/m = 2 * 0.5 / 4 = 0.25, from the round's own stream.
    assert np.std(mean) == pytest.approx(0.25, rel=0.01)
    again = (dp.noise_rng(c.seed, 3).standard_normal(200_000) * 1.0 / 4).astype(np.float32)
    np.testing.assert_array_equal(mean, again)
    fields = rule.record_fields()
    assert fields["epsilon"] == pytest.approx(accounting.epsilon(10, 4, 2.0, 4, c.privacy.delta))
    assert rule.weight(1234) == 1.0


def test_robust_rule_ignores_one_scaled_client_where_the_mean_does_not():
    k = 5
    u = updates(k, seed=4)
    u[2] = u[2] * np.float32(1e4)
    reps = {cid: wire.make_report(cid, 100, 0.5, 0.1, make_compressor(cfg().compression).encode(v, cid, None),
                                  (), 0) for cid, v in u.items()}
    start = np.zeros(N, np.float32)
    mean = server.aggregate(reps, N, start, "update", 0).mean_update
    c = cfg("server.aggregation=krum", "server.num_byzantine=1")
    rule = aggregation.round_aggregation(c, 0, range(k))
    agg = server.aggregate(reps, N, start, "update", 0, rule)
    assert np.linalg.norm(mean) > 100 * np.linalg.norm(u[0])
    assert agg.fields["selected_clients"] != [2]
    honest = max(np.linalg.norm(u[i]) for i in (0, 1, 3, 4))
    assert np.linalg.norm(agg.mean_update) <= honest
    med = server.aggregate(reps, N, start, "update", 0,
                           aggregation.round_aggregation(cfg("server.aggregation=median"), 0, range(k)))
    assert np.abs(med.mean_update).max() <= max(np.abs(u[i]).max() for i in (0, 1, 3, 4))


def test_krum_with_too_few_updates_falls_back_to_the_median_and_says_so():
    u = updates(3, seed=5)
    reps = {cid: wire.make_report(cid, 10, 0.5, 0.1, make_compressor(cfg().compression).encode(v, cid, None),
                                  (), 0) for cid, v in u.items()}
    rule = aggregation.round_aggregation(cfg("server.aggregation=krum", "server.num_byzantine=1"), 0, range(3))
    agg = server.aggregate(reps, N, np.zeros(N, np.float32), "update", 0, rule)
    np.testing.assert_array_equal(agg.mean_update, np.median(np.stack([u[0], u[1], u[2]]), axis=0)
                                  .astype(np.float32))
    assert "median" in agg.fields["aggregation_fallback"]


@pytest.mark.parametrize("sets,field", [
    (("server.aggregation=median", "system.transport=hierarchical"), "server.aggregation"),
    (("server.aggregation=krum", "privacy.clip_norm=1.0"), "server.aggregation"),
    (("privacy.clip_norm=1.0", "compression.target=weights"), "privacy.clip_norm"),
    (("privacy.secure_aggregation=true", "privacy.secagg_range=0.1"), "privacy.secure_aggregation"),
    (("privacy.secure_aggregation=true",), "privacy.secagg_range"),
    (("privacy.noise_multiplier=1.0",), "privacy.noise_multiplier"),
    (("attack.kind=scaled",), "attack.clients"),
    (("attack.kind=scaled", "attack.clients=[7]"), "attack.clients"),
])
def test_mechanisms_that_cannot_work_together_are_config_errors_naming_the_field(sets, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        cfg(*sets)


def test_defaults_change_nothing():
    c = cfg()
    assert isinstance(aggregation.round_aggregation(c, 0, (0, 1)), aggregation.WeightedMean)
    assert dataclasses.asdict(c.privacy)["clip_norm"] is None and c.attack.kind == "none"


def test_privacy_command_calibrates_z_and_reports_epsilon(capsys):
    from feddm_hpc.cli import main

    assert main(["privacy", str(TINY), "--epsilon", "8", "--set", "federation.rounds=5"]) == 0
    z = float(capsys.readouterr().out.split("privacy.noise_multiplier=")[1].split()[0])
    assert accounting.epsilon(4, 4, z, 5, 1e-5) <= 8.0 + 1e-9
    assert main(["privacy", str(TINY), "--set", "federation.rounds=5", "--set", "privacy.clip_norm=1",
                 "--set", f"privacy.noise_multiplier={z}"]) == 0
    eps = float(capsys.readouterr().out.split()[1])
    assert eps == pytest.approx(8.0, rel=0.01)
    assert main(["privacy", str(TINY)]) == 2   # no DP configured: a one-line error
    assert "privacy.clip_norm" in capsys.readouterr().err


def test_dp_mean_is_the_same_through_both_transports():
    from feddm_hpc.federation.transports import AllreduceTransport, GatherTransport

    c = cfg("privacy.clip_norm=0.5", "privacy.noise_multiplier=1.0", "federation.num_clients=6",
            "federation.clients_per_round=4")
    raw = make_compressor(cfg().compression)
    u = updates(4, seed=7)
    reps = [wire.make_report(cid, 10 * (cid + 1), 0.5, 0.1, raw.encode(v, cid, None), (), 0)
            for cid, v in u.items()]
    start = np.zeros(N, np.float32)
    means = []
    for cls in (GatherTransport, AllreduceTransport):
        rule = aggregation.round_aggregation(c, 5, (0, 1, 2, 3))
        means.append(cls(N, 0, "update").reduce(SerialCommunicator(), reps, start, {}, rule).aggregate.mean_update)
    # Unweighted sum over the fixed cohort of 4 plus the round's noise, whatever the sample counts.
    noise = dp.noise_rng(c.seed, 5).standard_normal(N) * 0.5
    expected = ((sum(v.astype(np.float64) for v in u.values()) + noise) / 4).astype(np.float32)
    np.testing.assert_allclose(means[0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(means[1], expected, rtol=1e-6, atol=1e-7)
