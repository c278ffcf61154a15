"""The argument parser class every command shares, and the shared --set option."""
from __future__ import annotations

import argparse
import sys

from feddm_hpc.cli.exits import EXIT_USER


class UserParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage block first)
        print(f"error: {message} (see feddm-hpc {self.prog.split()[-1]} --help)", file=sys.stderr)
        sys.exit(EXIT_USER)


def add_set(parser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set federation.rounds=5 (repeatable)")
