"""Command line: one module per command (train and resume share one), argument parsing and exit
codes. The only package that touches MPI.COMM_WORLD.

Exit codes: 0 success; 2 wrong user input (one line `error: ...` on stderr, no traceback);
1 internal error; 3 stopped early on request (SIGUSR1/SIGTERM) after writing a checkpoint;
4 a collective exceeded system.collective_timeout_s (a rank hung or died): the job is aborted.

Command modules import only the standard library at module level and the package inside their
`run` functions, so that `train` installs its signal handlers before the slow imports.
"""
from feddm_hpc.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
