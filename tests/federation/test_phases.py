"""Round phases: named, in first-run order, repeated phases add up, an exception still counts."""
import time

import pytest

from feddm_hpc.federation.phases import Phases


def test_phases_keep_order_and_add_up():
    p = Phases()
    with p.timed("broadcast"):
        time.sleep(0.01)
    p.add("train", 1.5)
    p.add("train", 0.25)
    with pytest.raises(RuntimeError):
        with p.timed("gather"):
            raise RuntimeError("a failed collective is still timed")
    assert list(p) == ["broadcast", "train", "gather"]
    assert p["train"] == 1.75 and p["broadcast"] >= 0.01 and p["gather"] >= 0.0
    assert p.rounded(1)["train"] == 1.8
