"""The clients' learning-rate schedule over rounds: a pure function of the client config section
and the round, shared by local training (federation/client.py) and SCAFFOLD's control update
(strategies/scaffold.py) without either importing the other's layer."""
from __future__ import annotations

import math


def lr_horizon(client_cfg, total_rounds: int) -> int:
    """The rounds the cosine schedule spans: client.lr_horizon, or (null) the run's rounds."""
    horizon = getattr(client_cfg, "lr_horizon", None)
    return total_rounds if horizon is None else horizon


def round_lr(client_cfg, round_index: int, total_rounds: int) -> float:
    """The clients' learning rate in round `round_index` (0-based) of `total_rounds`.

    A linear warm-up over `lr_warmup_rounds` (round r uses lr (r + 1) / W), then either constant
    or a cosine decay to lr * lr_min_ratio at the last round of the horizon (`lr_horizon`:
    client.lr_horizon, default total_rounds); rounds past the horizon keep that final rate. A
    pure function of the round, so a resumed run and any rank count use the same rate.
    """
    lr, warm = client_cfg.lr, client_cfg.lr_warmup_rounds
    if round_index < warm:
        return lr * (round_index + 1) / warm
    if client_cfg.lr_schedule == "constant":
        return lr
    span = max(1, lr_horizon(client_cfg, total_rounds) - 1 - warm)
    progress = min(1.0, (round_index - warm) / span)
    floor = lr * client_cfg.lr_min_ratio
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
