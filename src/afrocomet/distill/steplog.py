"""What a stage reports as it trains: `log.jsonl` (one line per optimizer step, one per dev
evaluation), the progress (a bar on a terminal, plain lines in a log), and each loss term's history
(its first and last window means go into the stage's result)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from afrocomet.distill.checkpoint import LoopState


def window_mean(values: list[float], first: bool, k: int = 10) -> float:
    part = values[:k] if first else values[-k:]
    return float(sum(part) / max(len(part), 1))


def _open_log(out: Path | None, offset: int | None):
    """log.jsonl of a stage: new, or (resuming) cut back to what the checkpoint had written."""
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    path = out / "log.jsonl"
    if offset is None or not path.is_file():
        return open(path, "w", encoding="utf-8")
    with open(path, "r+b") as fh:
        fh.truncate(offset)
    return open(path, "a", encoding="utf-8")


LINE_PERCENT = 10  # without a terminal: a line each time another 10% of a stage's steps is done ...
LINE_SECONDS = 10.0  # ... unless the last line is younger than this (a probe of a few seconds: its end line only)


class LineProgress:
    """The progress of a stage when stderr is not a terminal (CI, nohup, a log file): no carriage
    returns, a line `HH:MM:SS <stage>: <step>/<total> steps (<p>%), <s>s, ~<s>s left; <terms>` every
    LINE_PERCENT% (at most one per LINE_SECONDS) and one at the end. The part of tqdm's interface
    StepLog uses: update, set_postfix, close."""

    def __init__(self, total: int, initial: int, desc: str, stream=None, clock: Callable[[], float] = time.monotonic):
        self.total, self.n, self.desc, self.clock = max(int(total), 1), int(initial), desc, clock
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last = clock()
        self.first, self.next_percent, self.postfix = self.n, self._after(self.n), ""

    def _after(self, n: int) -> int:
        return (100 * n // self.total) // LINE_PERCENT * LINE_PERCENT + LINE_PERCENT

    def update(self, n: int = 1) -> None:
        self.n += n
        percent = 100 * self.n // self.total
        if percent < self.next_percent or self.n >= self.total:  # the end has its own line (close)
            return
        self.next_percent = self._after(self.n)
        if self.clock() - self.last >= LINE_SECONDS:
            elapsed, done = self.clock() - self.start, self.n - self.first
            left = f", ~{elapsed / done * (self.total - self.n):.0f}s left" if done > 0 else ""
            self._line(f"{self.n}/{self.total} steps ({percent}%), {elapsed:.0f}s{left}")

    def set_postfix(self, values: dict) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        """The stage's line: its steps and time (none while an exception unwinds: the error says it)."""
        if self.stream is None or sys.exc_info()[0] is not None:
            self.stream = None
            return
        ended = "" if self.n >= self.total else " (stopped early)"
        self._line(f"{self.n}/{self.total} steps{ended} in {self.clock() - self.start:.0f}s")
        self.stream = None

    def _line(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {self.desc}: {text}"
                              + (f"; {self.postfix}" if self.postfix else "") + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: nowhere to say it
            self.stream = None
        self.last = self.clock()


# Set in a process that trains one row beside others (run/jobs.py): its progress comes as lines (bars
# of two processes on one terminal would overwrite each other), each starting with the row's name.
ROW: str | None = None


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """tqdm's bar on a terminal (or in a notebook); LineProgress lines when stderr is anything else
    (or in a row's worker process, `ROW`)."""
    from tqdm.auto import tqdm

    if enabled and ROW is not None:
        return LineProgress(total, initial, f"{ROW}: {desc}")
    if enabled and not _terminal() and not tqdm.__module__.startswith("tqdm.notebook"):
        return LineProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class StepLog:
    """The log of one stage in `out` (None: no file, e.g. on a process other than the main one).
    `loop` is where the stage starts (a checkpoint's history and log offset when `resumed`).

    Loss values arrive as detached tensors (on the training device) and are read to the host in one
    transfer every `progress_every` steps (and at a dev evaluation, a checkpoint and the end), not per
    micro-step: on a GPU each read is a device sync. The lines and the history are the same either way."""

    def __init__(self, out: str | Path | None, loop: LoopState, *, resumed: bool, name: str, total_steps: int,
                 progress_every: int, progress: bool):
        out = Path(out) if out is not None else None
        self.fh = _open_log(out, loop.log_offset if resumed else None)
        self.path = None if out is None else str(out / "log.jsonl")
        self.history = loop.history
        self.rows: list[dict] = []  # micro-steps' values not yet read to the host
        self.steps: list[tuple[dict, int]] = []  # optimizer steps not yet written: (their fields, their micro-steps)
        self.pending = 0  # micro-steps added since the last optimizer step (a checkpoint is at a step: 0)
        self.progress_every, self.total_steps = progress_every, total_steps
        self.bar = progress_bar(total_steps, loop.step, name, progress)

    def add(self, values: dict) -> None:
        """One micro-step's loss values (each term, then `total`): 0-dim tensors or floats."""
        self.rows.append(values)
        self.pending += 1

    def step(self, step: int, epoch: int, lr: float, temperature: float) -> None:
        """An optimizer step: its line (each term's mean over the step's micro-steps, i.e. over the
        `grad_accum` batches whose gradients it applied; written at the next flush) and the progress bar."""
        self.steps.append(({"step": step, "epoch": epoch, "lr": lr, "temperature": temperature}, self.pending))
        self.pending = 0
        self.bar.update(1)
        if step % self.progress_every == 0 or step == self.total_steps:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in self.flush().items()})

    def flush(self) -> dict[str, float]:
        """Read the waiting values to the host in one transfer, extend the history and write the waiting
        steps' lines, in order; returns the last written step's means."""
        rows, waiting, self.rows, self.steps = self.rows, self.steps, [], []
        flat = iter(torch.stack([torch.as_tensor(v, dtype=torch.float64) for row in rows for v in row.values()])
                    .tolist() if rows else [])
        rows = [{name: next(flat) for name in row} for row in rows]
        means: dict[str, float] = {}
        for fields, n in waiting:
            self._extend(rows[:n])
            rows, n = rows[n:], max(n, 1)
            means = {k: float(sum(v[-n:]) / len(v[-n:])) for k, v in self.history.items()}
            self._write({**fields, **means})
        self._extend(rows)  # micro-steps of a step not finished (the stage stopped between them)
        return means

    def _extend(self, rows: list[dict[str, float]]) -> None:
        for row in rows:
            for name, value in row.items():
                self.history.setdefault(name, []).append(value)

    def dev_score(self, step: int, score: float) -> None:
        self.flush()
        self._write({"step": step, "dev_score": score})

    def offset(self) -> int:
        """Bytes written so far (what a checkpoint records, to cut the log back on resume)."""
        self.flush()
        if self.fh is None:
            return 0
        self.fh.flush()
        return self.fh.tell()

    def terms(self) -> dict[str, dict[str, float]]:
        """Each term's mean over its first and its last 10 micro-steps."""
        self.flush()
        return {k: {"first": window_mean(v, True), "last": window_mean(v, False)} for k, v in self.history.items()}

    def close(self) -> None:
        if sys.exc_info()[0] is None:  # while an exception unwinds, the lines not yet written stay unwritten
            self.flush()
        self.bar.close()
        if self.fh is not None:
            self.fh.close()

    def _write(self, record: dict) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(record) + "\n")
