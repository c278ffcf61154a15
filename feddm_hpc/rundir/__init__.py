"""The run directory: HDF5 checkpoints, the run log (metrics.jsonl), run files and image grids."""
