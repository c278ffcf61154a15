"""Rank 1 never joins the gather: with a timeout the root must abort cleanly, naming the phase."""
import sys
import time

import numpy as np

from feddm_hpc.comm import CollectiveTimeout, MPICommunicator, abort_with_message

comm = MPICommunicator(timeout_s=float(sys.argv[1]))
comm.context = "round 3, gather"
if comm.rank == 1:
    time.sleep(120)  # a hung rank
try:
    comm.gather_bytes(np.zeros(10, dtype=np.uint8))
except CollectiveTimeout as exc:
    abort_with_message(str(exc), 4)
