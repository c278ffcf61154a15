"""`feddm-hpc privacy CONFIG [--epsilon E]`: the privacy budget of a config's DP settings before
training (epsilon after all its rounds at privacy.delta), or the noise multiplier that a target
epsilon needs for its clients, cohort and rounds."""
from __future__ import annotations

from feddm_hpc.cli.args import add_set
from feddm_hpc.cli.exits import EXIT_OK
from feddm_hpc.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("privacy", help="epsilon of a config's DP settings, or the noise a target "
                                       "epsilon needs")
    p.add_argument("config")
    p.add_argument("--epsilon", type=float, default=None, metavar="E",
                   help="print the privacy.noise_multiplier that reaches epsilon E at privacy.delta")
    add_set(p)
    p.set_defaults(run=cmd_privacy)


def cmd_privacy(args) -> int:
    from feddm_hpc.config import load_config
    from feddm_hpc.privacy import accounting

    c = load_config(args.config, args.overrides)
    f, p = c.federation, c.privacy
    m = f.clients_per_round if f.clients_per_round is not None else f.num_clients
    where = (f"{f.rounds} rounds of {min(m, f.num_clients)} of {f.num_clients} clients, "
             f"delta {p.delta:g} ({accounting.NEIGHBOURING})")
    if args.epsilon is not None:
        if not args.epsilon > 0:
            raise UserError("--epsilon: must be > 0")
        z = accounting.noise_multiplier_for(args.epsilon, p.delta, f.num_clients, m, f.rounds)
        print(f"privacy.noise_multiplier={z:.4f} gives epsilon <= {args.epsilon:g} after {where}")
        return EXIT_OK
    if not p.dp:
        raise UserError("privacy.clip_norm: not set, so the run is not differentially private "
                        "(set privacy.clip_norm and privacy.noise_multiplier, or pass --epsilon)")
    eps = accounting.epsilon(f.num_clients, m, p.noise_multiplier, f.rounds, p.delta)
    print(f"epsilon {eps:.4g} for privacy.noise_multiplier={p.noise_multiplier:g} after {where}")
    return EXIT_OK
