"""Typed, frozen run configuration: YAML load, `--set` overrides, validation and dump.

Every section is a frozen dataclass (sections.py) whose choice fields are typing.Literal types
(choices.py); a config is built only through `load_config`, which rejects unknown keys, wrongly
typed values and values outside a Literal with a ConfigError naming the dotted field
(loading.py), then runs `validate` (each section's own checks, then the cross-section ones:
validation.py). The resolved config is dumped beside the results and inside every checkpoint, so
a run is self-describing.
"""
from feddm_hpc.config.choices import check_choice, check_choices, choice_fields, literal_values
from feddm_hpc.config.loading import (
    LEGACY_VALUES,
    config_from_tree,
    config_from_yaml_text,
    dump_yaml,
    load_config,
    read_yaml,
    to_tree,
)
from feddm_hpc.config.sections import (
    AttackConfig,
    CheckpointConfig,
    ClientConfig,
    CompressionConfig,
    Config,
    DataConfig,
    DiffusionConfig,
    EvaluationConfig,
    FederationConfig,
    ModelConfig,
    PersonalizationConfig,
    PrivacyConfig,
    SamplingConfig,
    ServerConfig,
    SystemConfig,
)
from feddm_hpc.config.validation import (
    check_cross_section,
    clients_have_state,
    shares_partly,
    validate,
)

__all__ = [
    "LEGACY_VALUES", "CheckpointConfig", "ClientConfig", "CompressionConfig", "Config",
    "DataConfig", "DiffusionConfig", "EvaluationConfig", "FederationConfig", "ModelConfig",
    "PersonalizationConfig", "PrivacyConfig", "AttackConfig", "SamplingConfig", "ServerConfig",
    "SystemConfig",
    "check_choice", "check_choices", "check_cross_section", "choice_fields", "clients_have_state",
    "config_from_tree", "config_from_yaml_text", "dump_yaml", "literal_values", "load_config",
    "read_yaml", "shares_partly", "to_tree", "validate",
]
