"""Scaling studies: grids of runs (spec, runner), their tables and plots (collect, plots), and a
network model that turns a run's bytes and compute into real-federation round times (network).

Kept light on import: `python -m feddm_hpc.scaling.rss` wraps every MPI rank of a study.
"""
