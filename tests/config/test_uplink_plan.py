"""The uplink as data (config/uplink_plan.py): which stages a config's clients run, in order, and
the refusals that follow from what the stages need, with the messages validation always gave."""
import pytest

from feddm_hpc.config import load_config
from feddm_hpc.config.uplink_plan import BOUNDED, UPDATE, WEIGHTS, uplink_plan
from feddm_hpc.errors import ConfigError

from conftest import TINY

SECURE = ["privacy.secure_aggregation=true", "privacy.secagg_range=0.05"]
DP = ["privacy.clip_norm=0.5"]


def plan(*sets):
    return uplink_plan(load_config(TINY, list(sets)))


@pytest.mark.parametrize("sets, names", [
    ((), ("delta", "encode")),
    (("compression.target=weights",), ("encode",)),
    ((*DP,), ("delta", "clip", "encode")),
    (("attack.kind=sign_flip", "attack.clients=[1]", *DP), ("delta", "attack", "clip", "encode")),
    # The attack acts on the update: weights become an update and back around it.
    (("attack.kind=scaled", "attack.clients=[1]", "compression.target=weights"),
     ("delta", "attack", "add_start", "encode")),
    (("attack.kind=label_flip", "attack.clients=[1]"), ("delta", "encode")),   # the data, not the update
    (("attack.kind=sign_flip", "attack.fraction=0.1"), ("delta", "encode")),   # 0.4 of a client: nobody
    (("federation.inject_nan_clients=[2]",), ("inject_nonfinite", "delta", "encode")),
    ((*SECURE, "compression.uplink=quant", *DP), ("delta", "clip", "mask")),
])
def test_the_stages_follow_the_config_in_order(sets, names):
    assert plan(*sets).names == names


def test_what_holds_of_the_sent_vector():
    assert plan().facts_after() >= {UPDATE}
    assert WEIGHTS in plan("compression.target=weights").facts_after()
    # Under DP the codec clips again after adding its residual: the bound survives error feedback.
    ef = ("compression.uplink=quant", "compression.bits=8", "compression.error_feedback=true")
    assert BOUNDED in plan(*DP, *ef).facts_after()
    attack = plan(*DP, "attack.kind=sign_flip", "attack.clients=[0]").stages[1]
    assert attack.name == "attack" and BOUNDED in attack.ends   # hence clipping comes after it


@pytest.mark.parametrize("sets, message", [
    ((*DP, "compression.target=weights"), "privacy.clip_norm: needs compression.target=update"),
    ((*SECURE,), "privacy.secure_aggregation: needs compression.uplink=quant"),
    ((*SECURE, "compression.uplink=topk"), "privacy.secure_aggregation: needs compression.uplink=quant"),
    ((*SECURE, "compression.uplink=quant", "compression.error_feedback=true"),
     "privacy.secure_aggregation: not with compression.error_feedback"),
    ((*SECURE, "compression.uplink=quant", "compression.target=weights"),
     "privacy.secure_aggregation: needs compression.target=update"),
    # Both wrong: DP's need of the masked vector is checked first, as validation always did.
    ((*SECURE, *DP, "compression.uplink=quant", "compression.target=weights"),
     "privacy.clip_norm: needs compression.target=update"),
])
def test_refusals_follow_from_the_stages_needs(sets, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.")):
        load_config(TINY, list(sets))


def test_the_federation_layer_builds_the_plans_stages():
    from feddm_hpc.compression import make_compressor
    from feddm_hpc.federation.uplink import build_uplink

    c = load_config(TINY, [*DP, "attack.kind=gaussian", "attack.clients=[0]", "attack.scale=0.1"])
    up = build_uplink(c, make_compressor(c.compression))
    assert [s.name for s in up.stages] == list(uplink_plan(c).names)
    clip = up.stages[2]
    assert clip.needs == {UPDATE} and clip.gives == {BOUNDED}
    assert BOUNDED in up.guarantees
