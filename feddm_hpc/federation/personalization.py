"""Personalization after the last round (personalization.steps > 0).

Each client fine-tunes the final global model for `steps` local steps on its own data and the
run reports, per client, the diffusion loss of the global and of the personalized model on a
held-out evaluation batch of that client's data. The batch (at most half the client's shard,
chosen from (seed, client_id)) is left out of the fine-tuning; it was part of federated training,
as the partition gives every example to training. Timesteps and noise of the evaluation are
fixed from (seed, client_id), so both models see exactly the same noisy inputs.

Runs distributed: each rank personalizes the clients it hosts (all of them, not one cohort),
the rows are gathered to the root, which writes RUN_DIR/personalization.json and logs a summary.
Fine-tuning uses the client section (optimizer, lr, batch size, prox_mu anchored at the global
model); SCAFFOLD's correction is not applied.
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
import torch

from feddm_hpc import generators, seeding
from feddm_hpc.data import select_batch
from feddm_hpc.diffusion.loss import training_loss
from feddm_hpc.federation.client import round_lr, to_device
from feddm_hpc.params import unflatten_into
from feddm_hpc.strategies.terms import proximal_terms


def split_holdout(seed: int, client_id: int, indices: np.ndarray, eval_size: int):
    """(fine-tuning indices, evaluation indices) of one client's shard."""
    perm = seeding.numpy_rng(seed, seeding.PERSONAL_SPLIT, 0, client_id).permutation(indices)
    n_eval = max(1, min(eval_size, perm.size // 2))
    train = perm[n_eval:] if perm.size > n_eval else perm
    return train, np.sort(perm[:n_eval])


def eval_loss(model, schedule, images: torch.Tensor, vector: np.ndarray, idx: np.ndarray,
              seed: int, client_id: int, device: str, loss_fn=training_loss) -> float:
    """Diffusion loss of `vector` on images[idx], with timesteps and noise fixed per client."""
    unflatten_into(vector, model)
    gen = generators.make_generator(device, seeding.seed_for(seed, seeding.PERSONAL_EVAL, 0, client_id))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x0 = select_batch(images, to_device(idx, images.device))
            return float(loss_fn(model, x0, schedule, gen).item())
    finally:
        model.train(was_training)


def personalize(view) -> Optional[dict]:
    """Collective, on a callbacks.RunView. Returns the report on the root (None elsewhere or
    when switched off)."""
    cfg, comm, s = view.cfg, view.comm, view.setup
    p = cfg.personalization
    if p.steps == 0:
        return None
    # Clients personalize the exact global model (with a compressed downlink, the ranks other
    # than the root hold only the clients' reference copy).
    global_params = view.global_params.copy()
    comm.bcast_array(global_params)
    rows = []
    final_lr = round_lr(cfg.client, cfg.federation.rounds - 1, cfg.federation.rounds)
    for cid in s.hosted[comm.rank]:
        train_idx, eval_idx = split_holdout(cfg.seed, cid, s.parts[cid], p.eval_size)
        loss_fn = view.trainer.loss_fn
        before = eval_loss(s.model, s.schedule, s.images, global_params, eval_idx, cfg.seed,
                           cid, s.device, loss_fn)
        # Fine-tuning continues at the last round's learning rate (client.lr_schedule).
        local, _ = view.trainer.train(global_params, cid, train_idx, 0, steps=p.steps,
                                     terms=proximal_terms(cfg.client),
                                     streams=(seeding.PERSONAL_TRAIN, seeding.PERSONAL_DROPOUT),
                                     lr=final_lr)
        after = eval_loss(s.model, s.schedule, s.images, local, eval_idx, cfg.seed, cid, s.device,
                          loss_fn)
        rows.append([cid, before, after, eval_idx.size])
    table = comm.gather_rows(np.asarray(rows, dtype=np.float64).reshape(-1, 4))
    if comm.rank != 0:
        return None
    table = table[np.argsort(table[:, 0])]
    report = {
        "steps": p.steps,
        "eval_size": p.eval_size,
        "clients": {str(int(c)): {"global_loss": g, "personalized_loss": q, "eval_examples": int(n)}
                    for c, g, q, n in table.tolist()},
        "mean_global_loss": float(table[:, 1].mean()),
        "mean_personalized_loss": float(table[:, 2].mean()),
        "clients_improved": int((table[:, 2] < table[:, 1]).sum()),
    }
    if view.run_dir is not None:
        (view.run_dir / "personalization.json").write_text(json.dumps(report, indent=1))
    view.log.info(f"personalization ({p.steps} steps, {len(table)} clients): mean held-out loss "
                 f"global {report['mean_global_loss']:.4f} -> personalized "
                 f"{report['mean_personalized_loss']:.4f}; {report['clients_improved']} "
                 f"client(s) improved")
    return report
