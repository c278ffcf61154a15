"""Experiment studies: a YAML spec (a base config, named cells of overrides, seeds, what to
evaluate and what to report) run by one command, `feddm-hpc study SPEC.yaml`.

  spec.py, report_spec.py   the spec, typed and validated at load (ConfigError naming the field)
  runs.py                   the runs (cell x seed) and the state of each run directory
  pool.py                   a local pool of runs, or one run as a Slurm array task
  slurm.py                  --slurm: the job array
  status.py                 --status: the progress view
  collect.py                --collect: table.md, summary.json and plots from the run directories
  values.py, tables.py, paired.py, plots.py   the report's numbers, columns, paired differences, plots

No cell name is known to the package: cells, tables, pairs and plots come from the spec.
"""
