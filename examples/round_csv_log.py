"""A user's round callback: one CSV line a round (round, loss, bytes up and down) in
RUN_DIR/rounds.csv, for a spreadsheet or a plotting script that does not read JSON lines.

    PYTHONPATH=$PWD mpiexec -n 2 python -m mpi4py -m feddm_hpc train configs/tiny.yaml \\
        --set 'logging.callbacks=[examples.round_csv_log:RoundCsvLog]'

The protocol (feddm_hpc.extend.RoundCallback): a subclass built with no arguments on every rank
that overrides `after_round(view, round_index, record)` (return True to stop the run; every rank
must answer alike) and/or `at_end(view)`. `record` is the round's metrics.jsonl line on the root
rank and None on the others, so file writes happen on the root only. A callback keeps no state
in checkpoints: after `feddm-hpc resume` this one appends to the file it finds.
"""
from feddm_hpc.extend import RoundCallback

COLUMNS = ("round", "train_loss", "uplink_bytes", "downlink_bytes")


class RoundCsvLog(RoundCallback):
    def after_round(self, view, round_index, record):
        if record is not None and view.run_dir is not None:      # the root rank
            path = view.run_dir / "rounds.csv"
            new = not path.exists()
            with open(path, "a") as f:
                if new:
                    f.write(",".join(COLUMNS) + "\n")
                f.write(",".join(str(record[c]) for c in COLUMNS) + "\n")
        return False
