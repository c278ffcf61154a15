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
    require(c.system.client_group_size in ("auto", 1) or c.model.dropout == 0,
            "system.client_group_size: clients trained together need model.dropout 0 (their "
            "dropout masks would not come from each client's own generator)")
    check_privacy_and_robustness(c)
    from feddm_hpc.compression import make_compressor  # late; the codec builds here (zstd installed)
    make_compressor(c.compression)


def check_privacy_and_robustness(c: Config) -> None:
    """DP, secure aggregation and robust rules each assume something of the rest of the run."""
    p, s, comp = c.privacy, c.server, c.compression
    if p.dp:
        require(comp.target == "update", "privacy.clip_norm: needs compression.target=update "
                "(DP clips the client's update, not its weights)")
        require(c.federation.algorithm != "scaffold", "privacy.clip_norm: not with scaffold (its "
                "control deltas would leave the clients unclipped and unnoised)")
        require(c.federation.cohort_sampling == "uniform" or c.federation.clients_per_round is None,
                "federation.cohort_sampling: the privacy accounting assumes uniform cohorts; "
                "use uniform with privacy.clip_norm")
        require(c.personalization.steps == 0 or p.release_client_metrics,
                "personalization.steps: per-client fine-tuning and its per-client results are "
                "outside the DP guarantee; set privacy.release_client_metrics=true to run it "
                "with privacy.clip_norm")
    if s.aggregation != "mean":
        require(c.system.transport == "gather", f"server.aggregation: {s.aggregation} needs every "
                "update at the root: use system.transport=gather")
        require(not p.dp, f"server.aggregation: {s.aggregation} cannot be combined with "
                "privacy.clip_norm (the DP analysis is that of the noised mean)")
        require(c.federation.algorithm != "scaffold",
                f"server.aggregation: {s.aggregation} is not defined for scaffold's control deltas")
    if p.secure_aggregation:
        require(comp.uplink == "quant", "privacy.secure_aggregation: needs compression.uplink=quant "
                "(an integer codec; the masks live in its integer ring)")
        require(not comp.error_feedback, "privacy.secure_aggregation: not with "
                "compression.error_feedback")
        require(comp.target == "update", "privacy.secure_aggregation: needs compression.target=update")
        require(c.system.transport == "gather", "privacy.secure_aggregation: needs system.transport=gather")
        require(s.aggregation == "mean", "privacy.secure_aggregation: the root sees only the sum, "
                "so server.aggregation must be mean")
        require(c.federation.algorithm != "scaffold", "privacy.secure_aggregation: not with scaffold")
        cohort = c.federation.clients_per_round or c.federation.num_clients
        require(min(cohort, c.federation.num_clients) >= p.secagg_min_clients,
                f"privacy.secagg_min_clients: a cohort of {min(cohort, c.federation.num_clients)} "
                f"client(s) is below the secure-aggregation threshold {p.secagg_min_clients}: the "
                f"root would learn single updates; sample more clients per round")
    a = c.attack
    require(all(0 <= i < c.federation.num_clients for i in a.clients),
            f"attack.clients: ids must lie in 0..{c.federation.num_clients - 1}")


def validate(c: Config) -> None:
    """The entry point: ConfigError naming the dotted field of the first failed check."""
    for f in fields(c):
        section = getattr(c, f.name)
        if hasattr(section, "validate"):
            section.validate()
    check_cross_section(c)
