"""A rank that fails in the middle of a streamed uplink (federation/payload_stream.py): rank 1
streams its first client's 4 MB payload to the root and, once the root has it under way (the
root says so), before its second client is done, either dies (argv[1] = "kill": SIGKILL to itself) or hangs (argv[1] = "hang"). The root, which
got that payload while "training", must not wait for the rest forever: a hang ends in
CollectiveTimeout (exit 4 naming the round and the phase, as the CLI does), a death ends the job
through the launcher. argv[2]: system.collective_timeout_s."""
import os
import signal
import sys
import time

import numpy as np

from feddm_hpc.comm import CollectiveTimeout, MPICommunicator, abort_with_message
from feddm_hpc.federation.reports import make_report
from feddm_hpc.federation.transports import GatherTransport

mode, timeout_s = sys.argv[1], float(sys.argv[2])
comm = MPICommunicator(timeout_s=timeout_s)
N = 1_000_000
GO = 99   # a tag of its own on the payloads' communicator
transport = GatherTransport(N, 0, "update", stream=True)
transport.connect(comm)
assert transport.stream is not None
comm.context = "round 0, train"
payload = np.zeros(16 + 4 * N, dtype=np.uint8)
try:
    reports = []
    for i, c in enumerate([2 * comm.rank, 2 * comm.rank + 1]):
        reports.append(make_report(c, 10, 0.5, 0.0, payload, (), 0, outbox=transport.outbox))
        transport.client_done(comm, reports[-1])
        if comm.rank == 1 and i == 0:
            comm.p2p.Recv(np.zeros(1, dtype=np.uint8), source=0, tag=GO)   # the root has it under way
            print("rank 1 failing", flush=True)
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(300)               # hung
    if comm.rank == 0:   # still "training", polling as between clients, until rank 1's first payload is under way
        deadline = time.monotonic() + 60
        while transport.stream.announced(1) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
            transport.stream.poll()
        print(f"root: {transport.stream.announced(1)} payload(s) of rank 1 under way", flush=True)
        comm.p2p.Send(np.ones(1, dtype=np.uint8), dest=1, tag=GO)   # now rank 1 fails
    comm.context = "round 0, wait for the slowest rank"
    transport.wait_for_ranks(comm)
    comm.context = "round 0, gather"
    transport.reduce(comm, reports, np.zeros(N, dtype=np.float32), {})
    print(f"unexpected: rank {comm.rank} finished the round", flush=True)
except CollectiveTimeout as exc:
    abort_with_message(str(exc), 4)
