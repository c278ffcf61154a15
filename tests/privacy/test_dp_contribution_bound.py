"""The DP sensitivity holds after encoding: for every compression, error-feedback and
secure-aggregation setting that validation accepts with privacy.clip_norm, each client's decoded
contribution to the round's sum has L2 norm <= C, over random and adversarial updates (all mass in
one coordinate, the same large update every round, values at and beyond the grid's edge). The
accountant assumes exactly this bound (sensitivity 2C under replace-one); a codec's rounding or
error feedback's residual must not take a contribution past it.

The contribution is read where the root forms the sum: server.aggregate's float64 weighted sum
(gather and hierarchical transports), or the grid decoding of the client's own unmasked codes
(secure aggregation, whose root decodes only sums of them)."""
import itertools

import numpy as np
import pytest

from feddm_hpc.compression import make_compressor
from feddm_hpc.config import load_config
from feddm_hpc.errors import ConfigError
from feddm_hpc.federation import aggregation, server
from feddm_hpc.federation import reports as wire
from feddm_hpc.federation.uplink import build_uplink
from feddm_hpc.privacy import secagg, secagg_inputs

from conftest import TINY

N = 8_000
C = 0.5
R = 0.05           # privacy.secagg_range: an 8-bit grid step of 3.9e-4, rounding bound 0.035 < C
ROUNDS = 6
CID = 3
TOL = 1e-9         # float64 rounding of the root's own clip
ZERO = np.zeros(N, np.float32)   # the client's start: its update is then its local vector


def _codec_settings():
    """(label, overrides) of every uplink setting the bound must cover."""
    out = [("none", ["compression.uplink=none"])]
    for bits, fmt in ((16, "fp16"), (16, "bf16")):
        out.append((f"quant{bits}-{fmt}", ["compression.uplink=quant", f"compression.bits={bits}",
                                           f"compression.fp16_format={fmt}"]))
    for bits, stochastic in itertools.product((8, 4, 2), (True, False)):
        out.append((f"quant{bits}-{'sr' if stochastic else 'rn'}",
                    ["compression.uplink=quant", f"compression.bits={bits}",
                     f"compression.stochastic_rounding={str(stochastic).lower()}"]))
    for frac, vbits in ((0.1, 16), (0.01, 8), (0.1, 32)):
        out.append((f"topk{frac}-v{vbits}", ["compression.uplink=topk", f"compression.topk_fraction={frac}",
                                             f"compression.topk_value_bits={vbits}",
                                             "compression.stochastic_rounding=true"]))
    return out


CASES = []
for (label, sets), ef, secure in itertools.product(_codec_settings(), (False, True), (False, True)):
    extra = [f"compression.error_feedback={str(ef).lower()}"]
    if secure:
        extra += ["privacy.secure_aggregation=true", f"privacy.secagg_range={R}"]
    CASES.append(pytest.param(sets + extra, id=f"{label}-{'ef' if ef else 'noef'}-{'secagg' if secure else 'plain'}"))


def _config(sets):
    return load_config(TINY, [f"privacy.clip_norm={C}", "privacy.noise_multiplier=1.0", *sets])


def _adversarial_sequences(rng):
    """name -> a function round -> the client's raw update for that round."""
    same = (rng.standard_normal(N) * 10 * C / np.sqrt(N)).astype(np.float32)   # norm ~10 C
    spike = np.zeros(N, np.float32)
    spike[N // 3] = 100 * C
    edge = np.full(N, R, np.float32) * np.where(rng.random(N) < 0.5, -1, 1).astype(np.float32)
    beyond = edge * 7
    small = (rng.standard_normal(N) * 0.3 * C / np.sqrt(N)).astype(np.float32)   # below C
    tiny = np.full(N, 1e-7, np.float32)

    def fresh(r):
        return (np.random.default_rng(r).standard_normal(N) * C / np.sqrt(N) * 3).astype(np.float32)
    return {"same-every-round": lambda r: same, "one-coordinate": lambda r: spike,
            "grid-edge": lambda r: edge, "beyond-grid-edge": lambda r: beyond,
            "below-C": lambda r: small, "near-zero": lambda r: tiny, "fresh-random": fresh}


def _contribution(c, payload, cohort, r) -> np.ndarray:
    """The float64 vector this client adds to the root's sum."""
    if c.privacy.secure_aggregation:
        words = secagg.unmask_sum(payload.view(np.uint32), [CID], [0], cohort, c.seed, r, threshold=1)
        return secagg.decode_grid_sum(words[:N], c.compression.bits, R, 1)
    rule = aggregation.round_aggregation(c, 0, cohort)
    report = wire.make_report(CID, 10, 0.1, 0.0, payload, (), 0)
    agg = server.aggregate({CID: report}, N, np.zeros(N, np.float32), "update", 0, rule, finish=False)
    assert agg.accepted == [CID]
    return agg.weighted_sum.total


@pytest.mark.parametrize("sets", CASES)
def test_every_decoded_contribution_has_norm_at_most_c(sets):
    try:
        c = _config(sets)   # load_config validates
        codec = make_compressor(c.compression)
        up = build_uplink(c, codec, N)   # knows the model size
    except ConfigError as exc:   # refused combinations are checked by the next test
        pytest.skip(f"refused: {exc}")
    cohort = [0, CID]
    worst = 0.0
    for name, seq in _adversarial_sequences(np.random.default_rng(1)).items():
        codec.drop_client(CID)   # each sequence starts without a residual
        for r in range(ROUNDS):
            payload = up.send(CID, r, cohort, ZERO, seq(r), loss=0.1, num_samples=10).payload
            norm = float(np.linalg.norm(_contribution(c, payload, cohort, r)))
            worst = max(worst, norm / C)
            assert norm <= C * (1 + TOL), f"{name}, round {r}: contribution norm {norm / C:.4f} C"
    assert worst > 0.5   # the sequences do reach the bound (a test that could not fail otherwise)


def test_the_combinations_validation_refuses_with_dp_are_the_documented_ones():
    refused = []
    for p in CASES:
        try:
            c = _config(p.values[0])
            build_uplink(c, make_compressor(c.compression), N)
        except ConfigError as exc:
            refused.append((p.id, str(exc).split(":")[0]))
    # Secure aggregation needs an integer grid without error feedback (validation), and a grid
    # whose rounding bound lies below C at this model size (start-up): 4- and 2-bit grids on
    # [-0.05, 0.05] over 8,000 coordinates round by up to 0.60 and 2.98 > C = 0.5.
    assert all("secagg" in pid for pid, _ in refused)
    assert {field for _, field in refused} == {"privacy.secure_aggregation", "privacy.clip_norm"}
    too_coarse = sorted(pid for pid, field in refused if field == "privacy.clip_norm")
    assert too_coarse == ["quant2-rn-noef-secagg", "quant2-sr-noef-secagg",
                          "quant4-rn-noef-secagg", "quant4-sr-noef-secagg"]
    accepted_secure = [p.id for p in CASES if "secagg" in p.id and p.id not in dict(refused)]
    assert sorted(accepted_secure) == ["quant16-bf16-noef-secagg", "quant16-fp16-noef-secagg",
                                       "quant8-rn-noef-secagg", "quant8-sr-noef-secagg"]


def test_a_grid_too_coarse_for_c_is_refused_before_training():
    """An 8-bit grid on [-0.5, 0.5] over 10^6 coordinates rounds by up to 3.9 in norm (even the
    zero vector decodes to norm 2.0): no encoding can keep a contribution within C = 1."""
    c = load_config(TINY, ["privacy.clip_norm=1.0", "privacy.secure_aggregation=true",
                           "privacy.secagg_range=0.5", "compression.uplink=quant", "compression.bits=8"])
    with pytest.raises(ConfigError, match=r"privacy\.clip_norm: secure aggregation's 8-bit grid"):
        build_uplink(c, make_compressor(c.compression), 10 ** 6)
    assert secagg_inputs.rounding_bound(10 ** 6, 8, 0.5) == pytest.approx(3.92, abs=0.01)
    build_uplink(c, make_compressor(c.compression), 10 ** 4)   # 0.39 < C: accepted


def test_bounded_grid_rounding_is_deterministic_and_mostly_unshrunk():
    """The conditional rounding redraws from the client's seeded generator: the same codes on
    any rank; and for an update well inside C its decoded vector stays close to it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N) * 0.2 * C / np.sqrt(N)
    a = secagg_inputs.encode_grid_bounded(x, 8, R, np.random.default_rng(5), C)
    b = secagg_inputs.encode_grid_bounded(x, 8, R, np.random.default_rng(5), C)
    np.testing.assert_array_equal(a, b)
    dec = secagg.decode_grid_sum(a, 8, R, 1)
    assert np.linalg.norm(dec - x) <= secagg_inputs.rounding_bound(N, 8, R)


def test_stats_words_sum_to_the_cohorts_statistics():
    m = 5
    words = [secagg_inputs.stats_words(loss, n, clipped, m)
             for loss, n, clipped in ((0.1, 10, True), (0.3, 20, False), (float("nan"), 5, True),
                                      (100.0, 1, False), (0.2, 4, False))]
    stats = secagg_inputs.read_stats(secagg.ring_sum(words), m, m)
    assert stats["num_samples"] == 40 and stats["clipped"] == 2
    cap = secagg_inputs.LOSS_CAP   # NaN and 100 count as the cap
    assert stats["train_loss"] == pytest.approx((0.1 + 0.3 + cap + cap + 0.2) / 5, abs=1e-6)


@pytest.mark.parametrize("sets, field", [
    (["privacy.secure_aggregation=true", "privacy.secagg_range=0.1", "compression.uplink=quant",
      "federation.clients_per_round=1"], "privacy.secagg_min_clients"),
    (["privacy.secure_aggregation=true", "privacy.secagg_range=0.1", "compression.uplink=quant",
      "federation.clients_per_round=2", "privacy.secagg_min_clients=3"], "privacy.secagg_min_clients"),
    (["privacy.secagg_min_clients=1"], "privacy.secagg_min_clients"),
    (["privacy.clip_norm=1.0", "personalization.steps=2"], "personalization.steps"),
])
def test_configurations_outside_the_guarantees_are_refused(sets, field):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', '[.]')}:"):
        load_config(TINY, sets)
    if field == "personalization.steps":   # released on purpose, outside the guarantee
        load_config(TINY, [*sets, "privacy.release_client_metrics=true"])
