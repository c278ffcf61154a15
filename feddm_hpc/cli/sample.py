"""`feddm-hpc sample CHECKPOINT --out FILE.png`: a grid of samples from a checkpoint's EMA model
(or from an export folder of `feddm-hpc export`: the same samples, bit for bit)."""
from __future__ import annotations

from feddm_hpc.cli.exits import EXIT_OK
from feddm_hpc.errors import UserError


def register(sub) -> None:
    s = sub.add_parser("sample", help="draw samples from a checkpoint's EMA model (or an export folder)")
    s.add_argument("checkpoint", help="a checkpoint file, or a folder written by feddm-hpc export")
    s.add_argument("--num", type=int, default=64)
    s.add_argument("--out", required=True)
    s.add_argument("--sampler", choices=("ddim", "ddpm"), default=None)
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--eta", type=float, default=None, help="ddim noise in [0, 1] (default: the config's)")
    s.add_argument("--device", default="auto")
    s.add_argument("--client", type=int, default=None,
                   help="partially shared runs (federation.shared_parts): this client's model "
                        "(default: all clients' models, an equal share each, in client order)")
    s.set_defaults(run=cmd_sample)


def cmd_sample(args) -> int:
    from feddm_hpc.rundir.imaging import save_image_grid

    if args.num < 1:
        raise UserError("--num: must be >= 1")
    images, round_index, sampler, steps = draw_checkpoint_samples(
        args.checkpoint, args.num, sampler=args.sampler, steps=args.steps, seed=args.seed,
        eta=args.eta, device=args.device, client=args.client)
    save_image_grid(images, args.out)
    print(f"wrote {args.num} samples ({sampler}, {steps} steps) from round {round_index} to {args.out}")
    return EXIT_OK


def draw_checkpoint_samples(checkpoint, num: int, sampler=None, steps=None, seed=None, eta=None,
                            device: str = "auto", client=None):
    """(images [num, C, H, W] in [-1, 1] on the CPU, the checkpoint's round, the sampler, its
    step count) from the checkpoint's EMA model (or an export folder's, the same images);
    sampler/steps/seed/eta default to its config's. A partially shared run has a model per
    client: `client`'s, or (None) all clients' models with an equal share of `num` each
    (diffusion/grids.draw_client_samples)."""
    from feddm_hpc.config import shares_partly
    from feddm_hpc.diffusion.grids import draw_client_samples, draw_samples
    from feddm_hpc.diffusion.schedule import make_schedule
    from feddm_hpc.federation.setup import build_model, prepare_device
    from feddm_hpc.federation.shared_space import SharedSpace, client_models
    from feddm_hpc.params import ParamSpec
    from feddm_hpc.rundir.checkpoint import load_checkpoint
    from feddm_hpc.rundir.export import read_ema_model

    if num < 1:
        raise UserError("--num: must be >= 1")
    config, weights, image_shape, round_index = read_ema_model(checkpoint)
    device, _ = prepare_device(config, device=device)   # one process: no sharing check
    model = build_model(config, image_shape, device)
    d = config.diffusion
    schedule = make_schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end).to(device)
    sampler = sampler or config.sampling.sampler
    steps = steps or config.sampling.steps
    if not 1 <= steps <= d.timesteps:
        raise UserError(f"--steps: must be between 1 and {d.timesteps}")
    seed = config.seed if seed is None else seed
    eta = config.sampling.eta if eta is None else eta
    if not 0.0 <= eta <= 1.0:
        raise UserError("--eta: must be in [0, 1]")
    models = None
    if shares_partly(config):   # a checkpoint: export refuses partially shared runs
        space = SharedSpace(ParamSpec.from_model(model), config.federation.shared_parts)
        models = client_models(space, weights, load_checkpoint(checkpoint, verify=False).clients,
                               config.federation.num_clients)
    common = dict(eta=eta, prediction=d.prediction)
    if models is None:
        if client is not None:
            raise UserError("--client: this run shares every part of its model (one global "
                            "model, no per-client parts)")
        images = draw_samples(model, schedule, weights, image_shape, num, sampler, steps,
                              seed, round_index, device, **common)
    else:
        if client is not None and not 0 <= client < len(models):
            raise UserError(f"--client: must be a client id in 0..{len(models) - 1}")
        images = draw_client_samples(model, schedule, models, image_shape, num, sampler,
                                     steps, seed, round_index, device,
                                     clients=None if client is None else [client], **common)
    return images.cpu(), round_index, sampler, steps if sampler == "ddim" else d.timesteps
