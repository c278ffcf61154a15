"""Extending a run on resume (`--set federation.rounds=N`): one start-up line names what the new
rounds count changes (the cosine lr's horizon, DP's final epsilon), and client.lr_horizon keeps
the old schedule on purpose."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from feddm_hpc.config import load_config
from feddm_hpc.config.sections import ClientConfig
from feddm_hpc.federation.client import round_lr
from feddm_hpc.federation.job import rounds_change_note

from conftest import DETERMINISTIC, TINY, cli_in_process, final_params, train_tiny

NOTE = re.compile(r"resume: federation\.rounds (\d+) -> (\d+) changes client\.lr_schedule=cosine's horizon: "
                  r"round (\d+)'s lr (\S+) under \d+ rounds -> (\S+) under \d+ .*--set client\.lr_horizon=(\d+)\)")


def cfg(*sets):
    return load_config(TINY, list(sets))


def test_lr_past_its_horizon_stays_at_the_final_value_and_null_is_todays_schedule():
    c = ClientConfig(lr=0.01, lr_schedule="cosine", lr_warmup_rounds=1, lr_min_ratio=0.1)
    for rounds in (1, 2, 5, 12):   # null: the horizon is the rounds count, bit for bit
        pinned = ClientConfig(lr=0.01, lr_schedule="cosine", lr_warmup_rounds=1, lr_min_ratio=0.1,
                              lr_horizon=rounds)
        assert [round_lr(c, r, rounds) for r in range(rounds)] == [round_lr(pinned, r, rounds)
                                                                  for r in range(rounds)]
    kept = ClientConfig(lr=0.01, lr_schedule="cosine", lr_warmup_rounds=1, lr_min_ratio=0.1, lr_horizon=4)
    assert [round_lr(kept, r, 9) for r in range(4)] == [round_lr(c, r, 4) for r in range(4)]
    assert {round_lr(kept, r, 9) for r in range(3, 9)} == {0.01 * 0.1}   # the final lr, held
    with pytest.raises(Exception, match=r"client\.lr_horizon"):
        cfg("client.lr_horizon=0")


def test_the_note_names_the_next_rounds_lr_before_and_after():
    before = cfg()
    assert before.client.lr_schedule == "cosine" and before.federation.rounds == 2
    note = rounds_change_note(before, cfg("federation.rounds=4"), 2)
    m = NOTE.fullmatch(note)
    assert m, note
    assert m.group(1, 2, 3, 6) == ("2", "4", "2", "2")
    # The values are the trainer's own (round_lr), under 2 and under 4 rounds.
    assert float(m.group(4)) == pytest.approx(round_lr(before.client, 2, 2), rel=1e-3)
    assert float(m.group(5)) == pytest.approx(round_lr(before.client, 2, 4), rel=1e-3)
    assert float(m.group(4)) == pytest.approx(1e-3 * 0.1, rel=1e-3)   # the 2-round run's final lr
    assert float(m.group(5)) > float(m.group(4))
    # Nothing depends on the rounds count, or it did not change, or no round is left: no line.
    assert rounds_change_note(before, before, 1) is None
    assert rounds_change_note(before, cfg("federation.rounds=4", "client.lr_horizon=2"), 2) is None
    const = cfg("client.lr_schedule=constant")
    assert rounds_change_note(const, cfg("client.lr_schedule=constant", "federation.rounds=4"), 2) is None
    assert rounds_change_note(cfg("federation.rounds=8"), cfg("federation.rounds=4"), 5) is None
    # Rounds still in the warm-up are the same under both counts: the first one that differs.
    warm = ("client.lr_warmup_rounds=3",)
    m = NOTE.fullmatch(rounds_change_note(cfg(*warm), cfg(*warm, "federation.rounds=6"), 2))
    assert m and m.group(3) == "4"


def test_under_dp_the_note_names_the_final_epsilon():
    from feddm_hpc.privacy import accounting

    dp = ("privacy.clip_norm=1.0", "privacy.noise_multiplier=1.0", "client.lr_schedule=constant")
    note = rounds_change_note(cfg(*dp), cfg(*dp, "federation.rounds=4"), 2)
    eps = [accounting.epsilon(4, 4, 1.0, n, 1e-5) for n in (2, 4)]
    assert note == (f"resume: federation.rounds 2 -> 4 changes the privacy budget: epsilon after the last "
                    f"round {eps[0]:.4g} -> {eps[1]:.4g} (delta 1e-05)")
    assert rounds_change_note(cfg(*dp), cfg(*dp), 1) is None   # the same count: the same budget


@pytest.fixture(scope="module")
def two_rounds(tiny_run_shared):
    """A finished 2-round tiny run (cosine lr, the default), checkpoints of rounds 0 and 1: the
    session's train_tiny run (tests/conftest.py), only ever copied here."""
    return tiny_run_shared


@pytest.fixture(scope="module")
def extended(two_rounds, tmp_path_factory):
    """two_rounds resumed to 4 rounds: (run dir, the resume's stderr)."""
    run = tmp_path_factory.mktemp("resume_ext_long") / "run"
    shutil.copytree(two_rounds, run)
    out = cli_in_process(["resume", str(run), *DETERMINISTIC, "--set", "federation.rounds=4"])
    assert out.returncode == 0, out.stderr
    return run, out.stderr


@pytest.mark.slow
def test_extending_a_run_says_that_the_lr_jumps_back_up(extended, tmp_path):
    err = extended[1]
    lines = [line for line in err.splitlines() if "resume: federation.rounds" in line]
    assert len(lines) == 1, err
    m = NOTE.search(lines[0])
    assert m and m.group(1, 2, 3) == ("2", "4", "2")
    assert float(m.group(4)) < float(m.group(5))
    # Resuming with an unchanged count (the 4-round run, its last checkpoint gone) says nothing.
    run = shutil.copytree(extended[0], tmp_path / "run")
    (run / "checkpoints" / "round-000003.h5").unlink()
    out = cli_in_process(["resume", str(run), *DETERMINISTIC])
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr and "resume: federation.rounds" not in out.stderr


@pytest.mark.slow
def test_lr_horizon_extends_a_run_on_the_old_schedule(two_rounds, extended, tmp_path):
    run = tmp_path / "kept"
    shutil.copytree(two_rounds, run)
    out = cli_in_process(["resume", str(run), *DETERMINISTIC, "--set", "federation.rounds=4",
                   "--set", "client.lr_horizon=2"])
    assert out.returncode == 0, out.stderr
    assert "resume: federation.rounds" not in out.stderr   # nothing changes: no line
    straight = train_tiny(tmp_path / "straight", "--set", "federation.rounds=4", "--set", "client.lr_horizon=2")
    np.testing.assert_array_equal(final_params(run), final_params(straight))
    # The horizon is what the trainer used: the extension without it trained at other rates.
    assert not np.array_equal(final_params(run), final_params(extended[0]))
