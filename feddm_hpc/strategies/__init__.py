"""Server strategies chosen by `federation.algorithm` from a registry (never eval)."""
from feddm_hpc.errors import ConfigError
from feddm_hpc.strategies.aggregate import WeightedSum, weighted_mean
from feddm_hpc.strategies.base import ClientState, Strategy
from feddm_hpc.strategies.scaffold import ClientControls, Scaffold
from feddm_hpc.strategies.server_opt import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

STRATEGIES = {cls.name: cls for cls in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad,
                                        Scaffold)}


def make_strategy(algorithm: str, server_cfg, num_params: int, run_config=None) -> Strategy:
    """The strategy of `algorithm`; `run_config` (the whole Config) enables its client half."""
    try:
        cls = STRATEGIES[algorithm]
    except KeyError:
        raise ConfigError(f"federation.algorithm: {algorithm!r} is not one of "
                          f"{', '.join(sorted(STRATEGIES))}") from None
    return cls(server_cfg, num_params, run_config)


__all__ = ["STRATEGIES", "ClientControls", "ClientState", "Scaffold", "Strategy", "WeightedSum", "make_strategy", "weighted_mean"]
