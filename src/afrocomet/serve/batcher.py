"""Micro-batching for the server: requests that arrive within a few milliseconds run as one padded
batch, and each caller gets its own rows back.

One worker (a single thread, so the model never runs twice at once and its thread pool is not
oversubscribed) takes the oldest waiting request, then any that arrive within `max_wait_ms`, up
to `max_batch` texts, and runs them through the same predictor as `afrocomet predict`
(afrocomet.predict.open_backend). The queue is bounded by texts: a request that would not fit
is refused at once (`QueueFull`, the server's 503 with Retry-After) instead of the queue growing
without limit. `max_wait_ms=0` and `max_batch=0` (no batching) run every request on its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Predict = Callable[[Sequence[str]], tuple[np.ndarray, int]]  # texts -> (logits [n, labels], n truncated)


class QueueFull(Exception):
    """The queue holds `limit` texts already: come back later."""


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future


@dataclass
class Stats:
    batches: int = 0
    requests: int = 0
    texts: int = 0
    refused: int = 0
    largest_batch: int = 0
    waiting_texts: int = 0  # accepted, not yet answered


class MicroBatcher:
    """Start it inside the server's event loop (`start`), `submit` from request handlers, `stop` at shutdown."""

    def __init__(self, predict: Predict, *, max_batch: int = 32, max_wait_ms: float = 1.0, max_queue: int = 256):
        self.predict, self.max_batch, self.max_wait = predict, max_batch, max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = Stats()
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="afrocomet-model")

    @property
    def batching(self) -> bool:
        return self.max_batch > 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """After the server stopped taking requests: finish what is queued, then end the worker."""
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        """This request's logits [n, labels] in its order, once its batch ran; QueueFull at once when
        it does not fit."""
        if self.stats.waiting_texts + len(texts) > self.max_queue:
            self.stats.refused += 1
            raise QueueFull(self.max_queue)
        request = _Request(list(texts), asyncio.get_running_loop().create_future())
        self.stats.waiting_texts += len(texts)
        self._queue.put_nowait(request)
        return await request.future

    async def _gather(self) -> list[_Request]:
        """The oldest request, and those arriving within max_wait while the batch has room."""
        batch = [await self._queue.get()]
        if not self.batching:
            return batch
        size = len(batch[0].texts)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while size < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            try:
                nxt = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            batch.append(nxt)
            size += len(nxt.texts)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            texts = [t for r in batch for t in r.texts]
            try:
                logits, _ = await loop.run_in_executor(self._pool, self.predict, texts)
            except Exception as exc:  # the model failed on this batch: each caller hears it, the server lives
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
            else:
                start = 0
                for r in batch:
                    rows = logits[start:start + len(r.texts)]
                    start += len(r.texts)
                    if not r.future.done():  # a caller that went away no longer waits for its rows
                        r.future.set_result(rows)
                self._count(batch, len(texts))
            finally:
                self.stats.waiting_texts -= len(texts)
                for _ in batch:
                    self._queue.task_done()

    def _count(self, batch: list[_Request], texts: int) -> None:
        s = self.stats
        s.batches, s.requests, s.texts = s.batches + 1, s.requests + len(batch), s.texts + texts
        s.largest_batch = max(s.largest_batch, texts)
