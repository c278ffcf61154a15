"""system.deterministic is harmless on a CPU: the same run gives bit-identical weights with it
(and with system.device_data_max_mb=0, which on a CPU keeps the images where they were)."""
import numpy as np
import pytest

from conftest import final_params, train_tiny


@pytest.mark.slow  # two tiny trainings
def test_deterministic_and_store_threshold_leave_cpu_results_bit_identical(tmp_path):
    plain = final_params(train_tiny(tmp_path / "plain", "--set", "system.device=cpu"))
    det = final_params(train_tiny(tmp_path / "det", "--set", "system.device=cpu",
                                  "--set", "system.deterministic=true",
                                  "--set", "system.device_data_max_mb=0"))
    assert np.array_equal(plain, det)
