"""Server strategies chosen by `federation.algorithm` from a registry (never eval)."""
from ..errors import ConfigError
from .aggregate import WeightedSum, weighted_mean
from .scaffold import ClientControls, Scaffold
from .server_opt import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, Strategy

STRATEGIES = {cls.name: cls for cls in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad,
                                        Scaffold)}


def make_strategy(algorithm: str, server_cfg, num_params: int) -> Strategy:
    try:
        cls = STRATEGIES[algorithm]
    except KeyError:
        raise ConfigError(f"federation.algorithm: {algorithm!r} is not one of "
                          f"{', '.join(sorted(STRATEGIES))}") from None
    return cls(server_cfg, num_params)


__all__ = ["STRATEGIES", "ClientControls", "Scaffold", "Strategy", "WeightedSum", "make_strategy", "weighted_mean"]
