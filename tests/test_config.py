import pytest

from feddm_hpc.config import Config, config_from_tree, config_from_yaml_text, dump_yaml, load_config
from feddm_hpc.errors import ConfigError


def test_defaults_validate_and_dump_round_trip():
    config = config_from_tree({})
    assert config == Config()
    assert config_from_yaml_text(dump_yaml(config)) == config


def test_tiny_config_loads(tiny_config):
    c = load_config(tiny_config)
    assert c.federation.num_clients == 4 and c.federation.rounds == 2
    assert c.model.channel_mults == (1, 2)


@pytest.mark.parametrize("tree, field", [
    ({"model": {"foo": 1}}, "model.foo"),
    ({"bogus": {}}, "bogus"),
    ({"federation": {"rounds": "ten"}}, "federation.rounds"),
    ({"federation": {"rounds": 2.5}}, "federation.rounds"),
    ({"client": {"lr": True}}, "client.lr"),
    ({"model": {"channel_mults": 3}}, "model.channel_mults"),
    ({"system": {"progress": "yes"}}, "system.progress"),
    ({"data": {"partition": "random"}}, "data.partition"),
    ({"federation": {"clients_per_round": 11, "num_clients": 10}}, "federation.clients_per_round"),
    ({"client": {"local_steps": 5, "local_epochs": 1.0}}, "client.local_steps"),
    ({"client": {"local_steps": None}}, "client.local_steps"),
    ({"diffusion": {"beta_start": 0.5, "beta_end": 0.1}}, "diffusion.beta_start"),
    ({"system": {"device": "tpu"}}, "system.device"),
    ({"sampling": {"steps": 5000}}, "sampling.steps"),
    ({"model": []}, "model"),
])
def test_errors_name_the_field(tree, field):
    with pytest.raises(ConfigError) as exc:
        config_from_tree(tree)
    assert str(exc.value).startswith(field), str(exc.value)


def test_unknown_algorithm_lists_valid_names():
    with pytest.raises(ConfigError) as exc:
        config_from_tree({"federation": {"algorithm": "fedsgd"}})
    assert "fedavg" in str(exc.value) and "fedprox" in str(exc.value)


def test_overrides_apply_with_yaml_types():
    c = config_from_tree({}, ["federation.rounds=7", "model.channel_mults=[1,2]", "client.grad_clip=null",
                              "data.dataset=fashion_mnist", "client.lr=1e-3"])
    assert c.federation.rounds == 7
    assert c.model.channel_mults == (1, 2)
    assert c.client.grad_clip is None
    assert c.data.dataset == "fashion_mnist"
    assert c.client.lr == pytest.approx(1e-3)


def test_override_errors():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config_from_tree({}, ["federation.rounds"])
    with pytest.raises(ConfigError, match="federation.nope"):
        config_from_tree({}, ["federation.nope=1"])


def test_int_accepted_for_float_not_reverse():
    assert config_from_tree({"client": {"lr": 1}}).client.lr == 1.0
    with pytest.raises(ConfigError, match="client.batch_size"):
        config_from_tree({"client": {"batch_size": 1.0}})


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("federation: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_config_is_frozen():
    c = Config()
    with pytest.raises(Exception):
        c.seed = 3  # type: ignore[misc]
