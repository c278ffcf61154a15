"""`validate(config)`: every section's own checks, then the few that read several sections.

Checks that need no data and no MPI; data- and rank-dependent checks happen at start-up.
"""
from __future__ import annotations

import importlib.util
from dataclasses import fields
from importlib.util import find_spec

from feddm_hpc.config.choices import UNET_PARTS, expand_shared_parts, is_import_path, require
from feddm_hpc.config.sections import Config
from feddm_hpc.config.uplink_plan import uplink_plan
from feddm_hpc.errors import ConfigError

# What strategies/scaffold.py assumes of the clients, as data (config imports no strategy): its
# option II control update (x - y_i)/(K lr) is the mean corrected gradient only for plain SGD steps.
SCAFFOLD_CLIENT = (("optimizer", "sgd"), ("momentum", 0), ("grad_clip", None))
_PLAIN_SGD = ("scaffold's control update (x - y_i)/(K lr) assumes plain SGD local steps, got {got}; "
              "set client.optimizer: sgd, client.momentum: 0, client.grad_clip: null")


def shares_partly(c: Config) -> bool:
    """federation.shared_parts leaves some U-Net part to each client (diffusion/parts.py)."""
    return expand_shared_parts(c.federation.shared_parts) != UNET_PARTS


def clients_have_state(c: Config) -> bool:
    """Per-client state that lives on a hosting rank between rounds (so clients cannot move)."""
    return (c.compression.error_feedback and c.compression.uplink != "none") \
        or c.federation.algorithm == "scaffold" or shares_partly(c)


def check_cross_section(c: Config) -> None:
    if c.federation.algorithm == "scaffold":  # option II's control update needs plain SGD clients
        check_scaffold_client(c.client)
    require(1 <= c.sampling.steps <= c.diffusion.timesteps,
            "sampling.steps: must be between 1 and diffusion.timesteps")
    require(not (c.system.placement == "per_round" and clients_have_state(c)),
            "system.placement: per_round needs stateless clients (no compression.error_feedback "
            "with a lossy uplink, no scaffold); use auto or static")
    require(c.system.client_group_size in ("auto", 1) or c.model.dropout == 0,
            "system.client_group_size: clients trained together need model.dropout 0 (their "
            "dropout masks would not come from each client's own generator)")
    check_privacy_and_robustness(c)
    check_codec_available(c)
    check_extensions(c)
    if shares_partly(c):
        check_partial_sharing(c)


def check_partial_sharing(c: Config) -> None:
    """What partial sharing cannot serve, and why (docs/communication.md#partial-sharing)."""
    require(c.model.name == "unet", f"federation.shared_parts: the parts are the project U-Net's; "
            f"model.name={c.model.name} shares the whole model (shared_parts [all])")
    require(c.model.parameterization != "hyper", "federation.shared_parts: the hypernetwork's "
            "generator makes every part's weights, so no part can stay with a client; use "
            "model.parameterization dense or lowrank, or shared_parts [all]")
    require(c.federation.algorithm != "scaffold", "federation.shared_parts: scaffold's control "
            "variates and correction are defined for the whole model; share all parts with scaffold")
    require(c.personalization.steps == 0, "personalization.steps: a partially shared run already "
            "keeps per-client parts (its per-client models are evaluated by feddm-hpc evaluate); "
            "fine-tuning on top is not supported")
    require(c.system.client_group_size in ("auto", 1), "system.client_group_size: clients trained "
            "together start from one vector, but under federation.shared_parts each client starts "
            "from its own private parts; use 1 or auto")


def check_extensions(c: Config) -> None:
    """The fields that name a user's extension (docs/extending.md), as far as the config can tell
    without importing it: model.options and the U-Net-only parameterizations against
    model.name, the syntax of each logging.callbacks entry."""
    m = c.model
    require(m.name != "unet" or not m.options,
            "model.options: constructor arguments of a model other than model.name=unet "
            "(the U-Net takes the model.* fields)")
    require(m.name == "unet" or m.parameterization == "dense",
            f"model.parameterization: {m.parameterization} factors the U-Net's layers; "
            f"model.name={m.name} needs dense")
    for path in c.logging.callbacks:
        require(is_import_path(path),
                f"logging.callbacks: {path!r} is not an import path package.module:Name")


def check_scaffold_client(client_cfg) -> None:
    """ConfigError naming the first client field that breaks option II's plain-SGD assumption."""
    for name, wanted in SCAFFOLD_CLIENT:
        value = getattr(client_cfg, name)
        if not (value is None if wanted is None else value == wanted):
            raise ConfigError(f"client.{name}: " + _PLAIN_SGD.format(got=repr(value)))


def check_codec_available(c: Config) -> None:
    """What only the environment decides: zstd needs the zstandard package (compression/lossless.py
    says the same when the codec is built at start-up; the section checks the rest), TensorBoard
    logging the tensorboard package, model.name diffusers_unet2d the diffusers package."""
    require(c.compression.lossless != "zstd" or find_spec("zstandard") is not None,
            "compression.lossless: 'zstd' needs the 'zstandard' package, which is not installed "
            "(pip install zstandard), or use 'zlib'")
    require(not c.logging.tensorboard or importlib.util.find_spec("tensorboard") is not None,
            "logging.tensorboard: the tensorboard package is not installed; install it with: "
            "pip install tensorboard (or pip install 'feddm_hpc[tensorboard]')")
    require(c.model.name != "diffusers_unet2d" or importlib.util.find_spec("diffusers") is not None,
            "model.name: diffusers_unet2d needs the diffusers package, which is not installed; "
            "install it with: pip install 'feddm_hpc[diffusers]' (or pip install diffusers)")


def check_privacy_and_robustness(c: Config) -> None:
    """DP, secure aggregation and robust rules each assume something of the rest of the run.
    What they need of the client's outgoing vector and its codec follows from the uplink's
    stages (uplink_plan.py); the rest is about the strategy, the transport and the rule."""
    p, s = c.privacy, c.server
    uplink_plan(c).check()
    if p.dp:
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
