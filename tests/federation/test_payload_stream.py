"""The streamed gather (system.stream_uplink, federation/payload_stream.py; issue 23 item 3):
payloads sent as each client is done arrive as one message per report, and the root unpacks
them exactly as it unpacks a rank's Gatherv blob; the outbox hands out each report's region;
a rank that fails mid-stream ends the job (hung: exit 4 naming the phase; killed: through the
launcher). Bit-identity with the Gatherv path under mpiexec, with payloads arriving out of id
order and interleaved across ranks, is checked by tests/mpi_programs/check_transport_buffers.py
(test_transport_buffers.py)."""
import subprocess
import sys
import time

import numpy as np
import pytest

from feddm_hpc.comm import SerialCommunicator
from feddm_hpc.federation import reports as wire
from feddm_hpc.federation.transports import GatherTransport, transport_for

from conftest import ROOT, TINY, mpiexec_path


def _reports(outbox=None, extras=0):
    """Three reports in the outbox, out of id order; client 1 could not encode (no bytes)."""
    rng = np.random.default_rng(0)
    out = []
    for c, size in ((4, 40), (1, 0), (7, 13)):
        if size:
            payload = rng.integers(0, 255, size, dtype=np.uint8)
            ext = tuple(rng.integers(0, 255, 5 + j, dtype=np.uint8) for j in range(extras))
        else:
            payload, ext = None, ()
        out.append(wire.make_report(c, 10 + c, 0.1 * c, 1.0, payload, ext, extras, outbox=outbox))
    return out


@pytest.mark.parametrize("extras", [0, 1])
def test_one_message_per_report_unpacks_as_the_rank_blob_does(extras):
    outbox = wire.Outbox()
    reports = _reports(outbox, extras)
    scalars = wire.pack_scalars(reports, extras)
    blob = outbox.contents().copy()
    messages = [outbox.region(rep).copy() for rep in reports]
    assert sum(m.size for m in messages) == blob.size and wire.report_count(scalars, extras) == 3
    a = wire.unpack([scalars], [blob], extras)
    b = wire.unpack([scalars], [messages], extras)
    assert sorted(a) == sorted(b) == [1, 4, 7]
    for c in a:
        assert np.array_equal(a[c].update, b[c].update) and a[c].uplink_bytes == b[c].uplink_bytes
        assert all(np.array_equal(x, y) for x, y in zip(a[c].extras, b[c].extras))
    assert outbox.placed(reports) and not outbox.placed(reports[::-1])


def test_a_message_of_the_wrong_size_or_count_is_refused():
    outbox = wire.Outbox()
    reports = _reports(outbox)
    scalars = wire.pack_scalars(reports, 0)
    messages = [outbox.region(rep).copy() for rep in reports]
    with pytest.raises(RuntimeError, match="client 7: its report claims 13 bytes, 12 arrived"):
        wire.unpack([scalars], [messages[:2] + [messages[2][:-1]]], 0)
    with pytest.raises(RuntimeError, match="2 payloads arrived for 3 reports"):
        wire.unpack([scalars], [messages[:2]], 0)
    with pytest.raises(ValueError, match="not in this outbox"):
        wire.Outbox().region(reports[0])


def test_stream_uplink_is_the_default_and_a_single_rank_never_streams():
    from feddm_hpc.config import load_config

    cfg = load_config(TINY, [])
    assert cfg.system.stream_uplink is True
    transport = transport_for(cfg, 10, 0)
    transport.connect(SerialCommunicator())
    assert isinstance(transport, GatherTransport) and transport.stream is None
    off = transport_for(load_config(TINY, ["system.stream_uplink=false"]), 10, 0)
    assert off.stream_wanted is False


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("mode,timeout_s", [("hang", "3"), ("kill", "0")])
def test_a_rank_failing_mid_stream_ends_the_job(mode, timeout_s):
    script = ROOT / "tests" / "mpi_programs" / "check_stream_fault.py"
    t0 = time.time()
    out = subprocess.run([mpiexec_path(), "-n", "2", sys.executable, "-m", "mpi4py", str(script),
                          mode, timeout_s], capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert time.time() - t0 < 60
    # The root had rank 1's first payload under way before rank 1 failed.
    assert "root: 1 payload(s) of rank 1 under way" in out.stdout, out.stdout + out.stderr
    assert "unexpected" not in out.stdout
    if mode == "hang":
        assert out.returncode == 4, out.stderr
        assert "round 0, wait for the slowest rank" in out.stderr and "collective_timeout_s" in out.stderr
    else:
        assert out.returncode != 0
