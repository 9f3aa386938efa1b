"""What a stage reports as it trains: `log.jsonl` (one line per optimizer step, one per dev
evaluation), the progress bar, and each loss term's history (its first and last window means
go into the stage's result)."""

from __future__ import annotations

import json
from pathlib import Path

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


class StepLog:
    """The log of one stage in `out` (None: no file, e.g. on a process other than the main one).
    `loop` is where the stage starts (a checkpoint's history and log offset when `resumed`)."""

    def __init__(self, out: str | Path | None, loop: LoopState, *, resumed: bool, name: str, total_steps: int,
                 log_every: int, progress: bool):
        from tqdm.auto import tqdm

        out = Path(out) if out is not None else None
        self.fh = _open_log(out, loop.log_offset if resumed else None)
        self.path = None if out is None else str(out / "log.jsonl")
        self.history = loop.history
        self.pending = 0  # micro-steps added since the last optimizer step (a checkpoint is at a step: 0)
        self.log_every, self.total_steps = log_every, total_steps
        self.bar = tqdm(total=total_steps, initial=loop.step, desc=name, disable=not progress, leave=False,
                        dynamic_ncols=True)

    def add(self, values: dict[str, float]) -> None:
        """One micro-step's loss values (each term, then `total`)."""
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)
        self.pending += 1

    def step(self, step: int, epoch: int, lr: float, temperature: float) -> None:
        """An optimizer step: its line (each term's mean over the step's micro-steps, i.e. over the
        `grad_accum` batches whose gradients it applied) and the progress bar."""
        n, self.pending = max(self.pending, 1), 0
        means = {k: float(sum(v[-n:]) / len(v[-n:])) for k, v in self.history.items()}
        self._write({"step": step, "epoch": epoch, "lr": lr, "temperature": temperature, **means})
        self.bar.update(1)
        if step % self.log_every == 0 or step == self.total_steps:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})

    def dev_score(self, step: int, score: float) -> None:
        self._write({"step": step, "dev_score": score})

    def offset(self) -> int:
        """Bytes written so far (what a checkpoint records, to cut the log back on resume)."""
        if self.fh is None:
            return 0
        self.fh.flush()
        return self.fh.tell()

    def terms(self) -> dict[str, dict[str, float]]:
        """Each term's mean over its first and its last 10 micro-steps."""
        return {k: {"first": window_mean(v, True), "last": window_mean(v, False)} for k, v in self.history.items()}

    def close(self) -> None:
        self.bar.close()
        if self.fh is not None:
            self.fh.close()

    def _write(self, record: dict) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(record) + "\n")
