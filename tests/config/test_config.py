import dataclasses

import pytest

from feddm_hpc.config import (
    LEGACY_VALUES,
    Config,
    clients_have_state,
    config_from_tree,
    config_from_yaml_text,
    dump_yaml,
    load_config,
    validate,
)
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


# The resolved YAML of the defaults, as the single-module config.py dumped it: checkpoints embed
# this text, so field order, names and formatting must not change.
DEFAULT_DUMP = """\
seed: 0
data:
  dataset: mnist
  path: null
  subset: null
  image_size: null
  center_crop: false
  channels: null
  partition: iid
  dirichlet_alpha: 0.5
  classes_per_client: 2
model:
  name: unet
  options: {}
  base_channels: 32
  channel_mults:
  - 1
  - 2
  - 2
  num_res_blocks: 1
  attention_resolutions:
  - 7
  dropout: 0.0
  parameterization: dense
  lowrank_rank: null
  lowrank_fraction: null
  hyper_embedding_dim: null
  hyper_chunk_size: null
diffusion:
  timesteps: 1000
  schedule: linear
  beta_start: 0.0001
  beta_end: 0.02
  prediction: eps
  loss_weighting: min_snr
  min_snr_gamma: 5.0
federation:
  num_clients: 10
  clients_per_round: null
  cohort_sampling: uniform
  rounds: 10
  algorithm: fedavg
  dropout_prob: 0.0
  straggler: none
  straggler_sigma: 0.5
  step_time_s: 1.0
  round_deadline_s: null
  inject_nan_clients: []
  shared_parts:
  - all
client:
  local_steps: 50
  local_epochs: null
  batch_size: 64
  optimizer: adam
  lr: 0.0002
  lr_schedule: cosine
  lr_warmup_rounds: 0
  lr_min_ratio: 0.1
  lr_horizon: null
  weight_decay: 0.0
  momentum: 0.9
  grad_clip: 1.0
  prox_mu: 0.0
compression:
  uplink: none
  bits: 8
  chunk_size: 4096
  stochastic_rounding: false
  error_feedback: false
  topk_fraction: 0.01
  topk_value_bits: 32
  lossless: none
  fp16_format: fp16
  target: update
  downlink: none
  downlink_bits: 8
server:
  lr: 1.0
  momentum: 0.9
  beta1: 0.9
  beta2: 0.99
  tau: 0.001
  ema_decay: 0.9
  ema_warmup: true
  aggregation: mean
  trim_fraction: 0.1
  num_byzantine: 1
  num_selected: null
privacy:
  clip_norm: null
  noise_multiplier: 0.0
  delta: 1.0e-05
  secure_aggregation: false
  secagg_range: null
  secagg_min_clients: 2
  release_client_metrics: false
attack:
  kind: none
  clients: []
  fraction: 0.0
  scale: 1.0
personalization:
  steps: 0
  eval_size: 64
sampling:
  sampler: ddim
  steps: 50
  eta: 0.0
  num_samples: 64
  every: 0
evaluation:
  every: 0
  num_samples: 1000
  extractor_epochs: null
  extractor_max_train: null
checkpoint:
  every: 1
  keep_last: 3
system:
  device: auto
  threads: 0
  progress: true
  collective_timeout_s: 0.0
  placement: auto
  transport: gather
  stream_uplink: true
  pipeline_clients: auto
  deterministic: false
  device_data_max_mb: 1024
  client_group_size: 1
  precision: fp32
logging:
  tensorboard: false
  callbacks: []
"""


def test_default_dump_is_byte_identical():
    assert dump_yaml(Config()) == DEFAULT_DUMP
    assert dump_yaml(config_from_yaml_text(DEFAULT_DUMP)) == DEFAULT_DUMP


def test_legacy_checkpoint_text_keeps_the_old_recipe():
    import yaml

    old = yaml.safe_load(DEFAULT_DUMP)
    for section, key in LEGACY_VALUES:
        del old[section][key]
    c = config_from_yaml_text(yaml.safe_dump(old, sort_keys=False))
    assert {(s, k): getattr(getattr(c, s), k) for s, k in LEGACY_VALUES} == LEGACY_VALUES
    assert config_from_yaml_text(DEFAULT_DUMP) == Config()  # present fields are kept


@pytest.mark.parametrize("section, change, field", [
    ("model", {"base_channels": 2}, "model.base_channels"),
    ("diffusion", {"timesteps": 1}, "diffusion.timesteps"),
    ("federation", {"rounds": 0}, "federation.rounds"),
    ("client", {"batch_size": 0}, "client.batch_size"),
    ("compression", {"chunk_size": 0}, "compression.chunk_size"),
    ("compression", {"uplink": "topk", "topk_fraction": 1.5}, "compression.topk_fraction"),
    ("server", {"ema_decay": 1.0}, "server.ema_decay"),
    ("personalization", {"steps": -1}, "personalization.steps"),
    ("sampling", {"eta": 2.0}, "sampling.eta"),
    ("evaluation", {"num_samples": 1}, "evaluation.num_samples"),
    ("checkpoint", {"keep_last": 0}, "checkpoint.keep_last"),
    ("system", {"device": "tpu"}, "system.device"),
    ("data", {"dataset": "npz"}, "data.path"),
])
def test_each_section_validates_its_own_fields(section, change, field):
    broken = dataclasses.replace(getattr(Config(), section), **change)
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        broken.validate()
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        validate(dataclasses.replace(Config(), **{section: broken}))
    with pytest.raises(ConfigError, match=rf"^{field}:"):
        config_from_tree({section: change})


def test_cross_section_checks():
    from feddm_hpc.config import SamplingConfig, SystemConfig

    long_sampling = SamplingConfig(steps=5000)
    long_sampling.validate()  # fine alone: the bound is diffusion.timesteps
    with pytest.raises(ConfigError, match="^sampling.steps: must be between 1 and diffusion"):
        validate(dataclasses.replace(Config(), sampling=long_sampling))
    per_round = SystemConfig(placement="per_round")
    per_round.validate()
    validate(dataclasses.replace(Config(), system=per_round))  # stateless clients: fine
    stateful = config_from_tree({"compression": {"uplink": "quant", "error_feedback": True}})
    assert clients_have_state(stateful)
    with pytest.raises(ConfigError, match="^system.placement: per_round needs stateless"):
        validate(dataclasses.replace(stateful, system=per_round))
    with pytest.raises(ConfigError, match="^client.optimizer: scaffold"):
        config_from_tree({"federation": {"algorithm": "scaffold"}})


def test_shipped_configs_round_trip():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    for path in [root / "tiny.yaml", root / "quickstart.yaml"]:
        c = load_config(path)
        assert dump_yaml(load_config(path)) == dump_yaml(c)
        assert config_from_yaml_text(dump_yaml(c)) == c
