"""Server strategies chosen by `federation.algorithm`: a name of the registry, or a user's Strategy
subclass by import path `package.module:Name` (importlib, never eval; docs/extending.md)."""
from feddm_hpc.errors import ConfigError
from feddm_hpc.plugins import is_import_path, load_class
from feddm_hpc.strategies.aggregate import WeightedSum, weighted_mean
from feddm_hpc.strategies.base import ClientState, Strategy
from feddm_hpc.strategies.scaffold import ClientControls, Scaffold
from feddm_hpc.strategies.server_opt import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

STRATEGIES = {cls.name: cls for cls in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad,
                                        Scaffold)}


def load_user_strategy(path: str, field: str = "federation.algorithm") -> type:
    """A user's Strategy subclass by import path (`package.module:Name`), checked against the
    protocol: a concrete subclass of Strategy with a string `name` that overrides `apply` or
    `server_step` (docs/extending.md)."""
    cls = load_class(path, field, Strategy)
    if not isinstance(getattr(cls, "name", None), str) or cls.name == Strategy.name:
        raise ConfigError(f"{field}: {path!r} needs its own class attribute name (a string)")
    if cls.apply is Strategy.apply and cls.server_step is Strategy.server_step:
        raise ConfigError(f"{field}: {path!r} implements neither apply nor server_step of "
                          f"feddm_hpc.strategies.base.Strategy")
    return cls


def make_strategy(algorithm: str, server_cfg, num_params: int, run_config=None) -> Strategy:
    """The strategy of `algorithm` (a registry name or a user's import path); `run_config` (the
    whole Config) enables its client half."""
    if is_import_path(algorithm):
        cls = load_user_strategy(algorithm)
    else:
        try:
            cls = STRATEGIES[algorithm]
        except KeyError:
            raise ConfigError(f"federation.algorithm: {algorithm!r} is not one of "
                              f"{', '.join(sorted(STRATEGIES))}") from None
    strategy = cls(server_cfg, num_params, run_config)
    if cls not in STRATEGIES.values() and run_config is not None:
        _check_user_strategy(algorithm, strategy, run_config)
    return strategy


def _check_user_strategy(algorithm: str, strategy: Strategy, c) -> None:
    """What config/validation.py checks of scaffold by name, checked of a user's strategy by what
    it declares: per-client state pins clients to their ranks; extra uploads are outside DP's
    clip and noise, secure aggregation's masks and the robust rules (as scaffold's are)."""
    if strategy.client_state is not None and c.system.placement != "static":
        raise ConfigError(f"system.placement: {algorithm!r} keeps per-client state "
                          f"(client_state), which needs system.placement: static")
    if strategy.upload_names:
        for blocked, field in ((c.privacy.dp, "privacy.clip_norm"),
                               (c.privacy.secure_aggregation, "privacy.secure_aggregation"),
                               (c.server.aggregation != "mean", "server.aggregation")):
            if blocked:
                raise ConfigError(f"{field}: not with {algorithm!r}, whose extra client uploads "
                                  f"({', '.join(strategy.upload_names)}) bypass it")


__all__ = ["STRATEGIES", "ClientControls", "ClientState", "Scaffold", "Strategy", "WeightedSum", "load_user_strategy", "make_strategy", "weighted_mean"]
