"""Progress of a training loop, for the terminal and for log files alike.

On a terminal the loops show a ``tqdm`` bar. Written to a file or a pipe (a study's log, a CI
job, ``ray job logs``) carriage-return bars become one unreadable line, so there the same
progress is plain lines instead: one every tenth of the run, and one at the end.

    bar = progress_bar("train GHN", total=300, initial=0, enabled=True)
    bar.update(1, loss=0.42)      # metrics shown beside the count
    bar.close()
"""

from __future__ import annotations

import sys
import time
from typing import IO


class PlainProgress:
    """Periodic ``desc: step/total (pct%) key=value ... [rate]`` lines on ``stream``."""

    def __init__(self, desc: str, total: int, initial: int, stream: IO[str], lines: int = 10):
        self.desc, self.total, self.n, self.stream = desc, total, initial, stream
        self.every = max(1, total // lines)
        self.postfix: dict = {}
        self.start, self.start_n = time.perf_counter(), initial
        self.last_line = initial

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        self.postfix.update(postfix)
        if self.n - self.last_line >= self.every or self.n >= self.total:
            self._line()

    def _line(self) -> None:
        self.last_line = self.n
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.postfix.items())
        elapsed = time.perf_counter() - self.start
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        print(f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) {shown} "
              f"[{rate:.2f} steps/s]".replace("  ", " "), file=self.stream, flush=True)

    def close(self) -> None:
        if self.n != self.last_line:
            self._line()


class TerminalProgress:
    """A ``tqdm`` bar with the same interface."""

    def __init__(self, desc: str, total: int, initial: int, stream: IO[str]):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=stream)

    def update(self, n: int = 1, **postfix) -> None:
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v
                                  for k, v in postfix.items()}, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class NoProgress:
    def update(self, n: int = 1, **postfix) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(desc: str, *, total: int, initial: int = 0, enabled: bool = True,
                 stream: IO[str] | None = None):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, plain periodic lines when it
    is not, nothing when not ``enabled`` (other ranks, callers that report themselves)."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        return NoProgress()
    if stream.isatty():
        return TerminalProgress(desc, total, initial, stream)
    return PlainProgress(desc, total, initial, stream)
