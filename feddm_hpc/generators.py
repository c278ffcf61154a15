"""Where random draws happen: the one factory of seeded torch generators.

Policy. Training noise (a client's timesteps and noise, personalization's evaluation noise) is
drawn on the device the model runs on, on exactly that device, index
included (`torch.Generator(device="cuda:1")` on a rank placed on cuda:1): drawing on the CPU and
copying would cost a host->device transfer every step, and a bare "cuda" would draw every rank's
numbers on cuda:0. Evaluation and sampling noise (evaluation/generation.py, the sample grids of
diffusion/grids.py and `feddm-hpc sample`) is drawn on the CPU, so a GPU run's samples start
from the same x_T as a CPU run's.

A CPU run draws on the CPU either way, so its numbers do not depend on this policy. Tests replace
`make_generator` (monkeypatch feddm_hpc.generators.make_generator) to see which device each caller
asks for; callers therefore call it through the module, never a name imported from it.
"""
from __future__ import annotations

import torch


def make_generator(device, seed: int) -> torch.Generator:
    """A torch.Generator on `device` (the model's device string, e.g. "cpu" or "cuda:1"),
    seeded with `seed`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def seed_default_generator(device, seed: int) -> None:
    """Seed the global generator that draws for `device` (dropout inside the model): on the CPU
    only torch's CPU generator, which is all torch.manual_seed changes that a CPU run reads
    (manual_seed also visits every accelerator backend: ~0.25 ms, a 1-step client's 0.5%);
    on an accelerator torch.manual_seed as before, every generator at once."""
    if torch.device(device).type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)
