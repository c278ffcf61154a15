"""Named wall-clock phases of one round (the `phases` object of a metrics.jsonl line)."""
from __future__ import annotations

import time
from contextlib import contextmanager


class Phases(dict):
    """phase name -> seconds, in the order the phases first ran; repeated phases add up."""

    def add(self, name: str, seconds: float) -> None:
        self[name] = self.get(name, 0.0) + seconds

    @contextmanager
    def timed(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def rounded(self, digits: int = 5) -> dict:
        return {k: round(v, digits) for k, v in self.items()}
