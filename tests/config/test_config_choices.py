"""Choice fields: every one is a typing.Literal, checked generically, and equal to its registry.

The Literal types in feddm_hpc/config/choices.py are the one source of truth for the valid
values; the registries elsewhere (strategies, transports, codecs, datasets, ...) must key
exactly the same names, which test_registry_names_equal_the_literal asserts.
"""
import dataclasses
import importlib
import typing
from pathlib import Path

import pytest

from feddm_hpc.compression import zstd_available
from feddm_hpc.config import Config, choices, config_from_tree, dump_yaml, validate
from feddm_hpc.errors import ConfigError

SECTIONS = [(f.name, typing.get_type_hints(Config)[f.name]) for f in dataclasses.fields(Config)
            if dataclasses.is_dataclass(typing.get_type_hints(Config)[f.name])]


def literal_fields():
    """(section, field, Literal type) of every Literal field of every section."""
    out = []
    for section, cls in SECTIONS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if typing.get_origin(hints[f.name]) is typing.Literal:
                out.append((section, f.name, hints[f.name]))
    return out


LITERALS = literal_fields()
IDS = [f"{s}.{f}" for s, f, _ in LITERALS]


def bogus(hint):
    """A value of the Literal's value type that is not one of its values."""
    values = typing.get_args(hint)
    if isinstance(values[0], str):
        return "no-such-choice"
    return max(values) + 1


# Settings a value needs to pass the other checks (it is valid, but not on its own).
NEEDS = {
    ("data", "dataset", "npz"): {"data": {"path": "x.npz"}},
    ("data", "dataset", "hdf5"): {"data": {"path": "x.h5"}},
    ("model", "parameterization", "lowrank"): {"model": {"lowrank_rank": 1}},
    ("data", "dataset", "image_folder"): {"data": {"path": "images/"}},
    ("data", "dataset", "cifar10"): {"data": {"path": "cifar-10-batches-bin/"}},
    ("federation", "algorithm", "scaffold"): {"client": {"optimizer": "sgd", "momentum": 0.0,
                                                         "grad_clip": None}},
    **{("attack", "kind", kind): {"attack": {"clients": [0]}}
       for kind in ("sign_flip", "scaled", "gaussian", "label_flip")},
}


def test_the_issue_s_choice_fields_are_all_literals():
    assert set(IDS) == {
        "data.dataset", "data.partition", "model.name", "model.parameterization", "diffusion.schedule",
        "diffusion.prediction",
        "diffusion.loss_weighting", "federation.algorithm", "federation.straggler",
        "federation.cohort_sampling",
        "client.optimizer", "client.lr_schedule", "compression.uplink", "compression.bits",
        "compression.topk_value_bits", "compression.lossless", "compression.fp16_format",
        "compression.target", "compression.downlink", "compression.downlink_bits",
        "sampling.sampler", "system.placement", "system.transport", "system.precision",
        "server.aggregation",
        "attack.kind"}
    assert choices.choice_fields(type(Config().compression))  # the helper sees them too
    assert {f"{s}.{n}" for s, cls in SECTIONS for n, _ in choices.choice_fields(cls)} == set(IDS)


@pytest.mark.parametrize("section,name,hint", LITERALS, ids=IDS)
def test_default_is_one_of_the_values(section, name, hint):
    assert getattr(getattr(Config(), section), name) in typing.get_args(hint)


@pytest.mark.parametrize("section,name,hint", LITERALS, ids=IDS)
def test_loader_rejects_a_bogus_value_naming_the_field(section, name, hint):
    value = bogus(hint)
    expected = (f"{section}.{name}: invalid value {value!r}; valid values: "
                + ", ".join(str(v) for v in typing.get_args(hint))
                + (" or an import path package.module:Name"       # tests/test_extensions.py
                   if f"{section}.{name}" in choices.EXTENSIBLE_FIELDS else ""))
    with pytest.raises(ConfigError) as exc:
        config_from_tree({section: {name: value}})
    assert str(exc.value) == expected
    with pytest.raises(ConfigError) as exc:  # the same through --set
        config_from_tree({}, [f"{section}.{name}={value}"])
    assert str(exc.value) == expected


@pytest.mark.parametrize("section,name,hint", LITERALS, ids=IDS)
def test_section_validate_rejects_a_bogus_value(section, name, hint):
    """A section built or replaced in code (not loaded) is checked by its own validate()."""
    value = bogus(hint)
    broken = dataclasses.replace(getattr(Config(), section), **{name: value})
    with pytest.raises(ConfigError, match=rf"^{section}\.{name}: invalid value"):
        broken.validate()
    with pytest.raises(ConfigError, match=rf"^{section}\.{name}: invalid value"):
        validate(dataclasses.replace(Config(), **{section: broken}))


@pytest.mark.parametrize("section,name,hint", LITERALS, ids=IDS)
def test_every_value_loads_and_dumps(section, name, hint):
    for value in typing.get_args(hint):
        if value == "zstd" and not zstd_available():
            continue
        tree = {section: {name: value}}
        for extra_section, extra in NEEDS.get((section, name, value), {}).items():
            tree.setdefault(extra_section, {}).update(extra)
        c = config_from_tree(tree)
        assert getattr(getattr(c, section), name) == value
        assert f"  {name}: {value}\n" in dump_yaml(c)


@pytest.mark.parametrize("section,name,hint", LITERALS, ids=IDS)
def test_wrong_type_keeps_the_plain_type_message(section, name, hint):
    values = typing.get_args(hint)
    if isinstance(values[0], str):
        wrong, message = 3, f"{section}.{name}: expected a string, got 3"
    else:
        wrong, message = str(values[0]), f"{section}.{name}: expected an integer, got '{values[0]}'"
    with pytest.raises(ConfigError) as exc:
        config_from_tree({section: {name: wrong}})
    assert str(exc.value) == message
    if not isinstance(values[0], str):  # bool is no int here: true is not 1
        with pytest.raises(ConfigError, match=rf"^{section}\.{name}: expected an integer"):
            config_from_tree({section: {name: True}})
        with pytest.raises(ConfigError, match=rf"^{section}\.{name}: invalid value True"):
            dataclasses.replace(getattr(Config(), section), **{name: True}).validate()


# ---------------------------------------------------------------- one source of truth

def _registries():
    from feddm_hpc import strategies
    from feddm_hpc.compression import COMPRESSORS, header, quantize, topk
    from feddm_hpc.diffusion import loss, models, parameterization, samplers, schedule
    from feddm_hpc.federation import attacks, precision, transports
    from feddm_hpc.strategies import robust
    datasets = importlib.import_module("feddm_hpc.data.datasets")
    partition = importlib.import_module("feddm_hpc.data.partition")  # not the function of that name
    return [
        ("strategies.STRATEGIES", strategies.STRATEGIES, choices.Algorithm),
        ("transports.TRANSPORTS", transports.TRANSPORTS, choices.Transport),
        ("federation.precision.PRECISIONS", precision.PRECISIONS, choices.Precision),
        ("compression.COMPRESSORS", COMPRESSORS, choices.Uplink),
        ("compression.header.LOSSLESS_IDS", header.LOSSLESS_IDS, choices.Lossless),
        ("compression.topk.VALUE_BITS", topk.VALUE_BITS, choices.TopkValueBits),
        # bits 16 is the float16 codec; the integer quant codec takes the others
        ("16 + compression.quantize.VALID_BITS", (16,) + tuple(quantize.VALID_BITS), choices.Bits),
        ("diffusion.loss.PREDICTIONS", loss.PREDICTIONS, choices.Prediction),
        ("diffusion.loss.LOSS_WEIGHTINGS", loss.LOSS_WEIGHTINGS, choices.LossWeighting),
        ("diffusion.schedule.SCHEDULES", schedule.SCHEDULES, choices.Schedule),
        ("diffusion.samplers.SAMPLERS", samplers.SAMPLERS, choices.Sampler),
        ("diffusion.parameterization.PARAMETERIZATIONS", parameterization.PARAMETERIZATIONS,
         choices.Parameterization),
        ("diffusion.models.MODELS", models.MODELS, choices.ModelName),
        ("data.datasets.DATASETS", datasets.DATASETS, choices.Dataset),
        ("data.partition.SCHEMES", partition.SCHEMES, choices.Partition),
        ("strategies.robust.AGGREGATION_RULES", robust.AGGREGATION_RULES, choices.Aggregation),
        ("none + federation.attacks.ATTACK_KINDS", ("none",) + tuple(attacks.ATTACK_KINDS),
         choices.AttackKind),
    ]


def assert_same_names(where, registry, literal):
    names, values = list(registry), list(typing.get_args(literal))
    assert len(names) == len(set(names)), f"{where} repeats a name: {names}"
    missing, extra = set(values) - set(names), set(names) - set(values)
    assert not missing and not extra, (
        f"{where} and its Literal in feddm_hpc/config/choices.py drifted apart: "
        f"only in the Literal {sorted(missing, key=str)}, only in the registry "
        f"{sorted(extra, key=str)}")


REGISTRIES = _registries()


@pytest.mark.parametrize("where,registry,literal", REGISTRIES, ids=[r[0] for r in REGISTRIES])
def test_registry_names_equal_the_literal(where, registry, literal):
    assert_same_names(where, registry, literal)


def test_the_consistency_check_catches_drift():
    from feddm_hpc import strategies
    drifted = [dict(strategies.STRATEGIES, fednew=object()),               # a new strategy
               {k: v for k, v in strategies.STRATEGIES.items() if k != "scaffold"},  # one gone
               ("eps",)]
    for registry in drifted:
        with pytest.raises(AssertionError, match="drifted apart"):
            assert_same_names("x", registry, choices.Algorithm)
    with pytest.raises(AssertionError, match="drifted apart"):
        assert_same_names("bits", (16, 8, 4), choices.Bits)


def test_config_modules_stay_small():
    package = Path(choices.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py")}
    assert sizes and max(sizes.values()) <= 400, sizes
