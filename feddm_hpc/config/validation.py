"""`validate(config)`: every section's own checks, then the few that read several sections.

Checks that need no data and no MPI; data- and rank-dependent checks happen at start-up.
"""
from __future__ import annotations

from dataclasses import fields

from feddm_hpc.config.choices import require
from feddm_hpc.config.sections import Config


def clients_have_state(c: Config) -> bool:
    """Per-client state that lives on a hosting rank between rounds (so clients cannot move)."""
    return (c.compression.error_feedback and c.compression.uplink != "none") \
        or c.federation.algorithm == "scaffold"


def check_cross_section(c: Config) -> None:
    if c.federation.algorithm == "scaffold":  # option II's control update needs plain SGD clients
        from feddm_hpc.strategies.scaffold import check_client_config  # late: strategies import config
        check_client_config(c.client)
    require(1 <= c.sampling.steps <= c.diffusion.timesteps,
            "sampling.steps: must be between 1 and diffusion.timesteps")
    require(not (c.system.placement == "per_round" and clients_have_state(c)),
            "system.placement: per_round needs stateless clients (no compression.error_feedback "
            "with a lossy uplink, no scaffold); use auto or static")
    from feddm_hpc.compression import make_compressor  # late; the codec builds here (zstd installed)
    make_compressor(c.compression)


def validate(c: Config) -> None:
    """The entry point: ConfigError naming the dotted field of the first failed check."""
    for f in fields(c):
        section = getattr(c, f.name)
        if hasattr(section, "validate"):
            section.validate()
    check_cross_section(c)
