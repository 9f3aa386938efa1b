"""Student rows trained side by side: `jobs` processes on a CPU, each on its share of the threads.

A small student's training step is mostly per-step overhead (Python, autograd, optimizer), which
more threads do not shorten: on 2 cores, the default run's four rows took 282 s two at a time on one
thread each, 472 s one after the other on two threads (docs/performance.md).

How: what rows share is trained first, in this process at the run's threads: the stage 1 another row
reads (the paper's student shares the hybrid's) and the language-sampling alpha search (which builds
the teacher-output caches, the teacher's work). Then every row goes through the same
`run.students.train_student` in a spawned process, and every stage it trains is saved as a finished
stage in the run's folder (`Context.train`); the run walks the rows in order, as with one job, and
loads them. So the records and resuming are those of the one-job path, and each row's stages after
the shared ones are what one job gives at the per-job thread count (tests/test_jobs.py).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from afrocomet.errors import AfroCometError
from afrocomet.run.context import Context
from afrocomet.run.students import Variant, train_student

log = logging.getLogger("afrocomet")


class Row(NamedTuple):
    """One student of the run: the context it trains in (a language's, per_language), its stage-name
    tag, variant and seed."""

    ctx: Context
    tag: str
    variant: Variant
    seed: int


def choose_jobs(ctx: Context, rows: int) -> int:
    """config.jobs, else one per CPU thread (torch's, at most the cores this process may use), at most
    the rows; 1 on a GPU or under `--num-processes`."""
    from afrocomet.device import available_cores
    from afrocomet.distill.parallel import processes

    jobs, world = ctx.config.jobs, processes().world
    if world > 1:
        if jobs is not None and jobs > 1:
            raise AfroCometError(f"jobs {jobs} cannot be combined with {world} processes (--num-processes): "
                                 "each process already trains every row's share of each batch")
        return 1
    if jobs is None:
        jobs = min(torch.get_num_threads(), available_cores()) if ctx.device.type == "cpu" else 1
    return max(1, min(jobs, rows))


def train_side_by_side(rows: list[Row], teacher_mlm: nn.Module | None, teacher: nn.Module, jobs: int) -> dict:
    """Train `rows` `jobs` at a time, each on threads // jobs threads, what they share first (here);
    their stages land in the run folder as finished. Returns what results.json records."""
    threads = max(1, torch.get_num_threads() // jobs)
    shared = {v.stage1_from for _, _, v, _ in rows if v.stage1_from is not None}
    log.info("students: %d rows side by side in %d processes, %d thread(s) each", len(rows), jobs, threads)
    with workers(jobs, threads) as pool:  # they start (their imports) while the shared part trains
        for i, row in enumerate(rows):  # at the run's threads (the teacher-output caches are built here);
            if i == 0 or row.variant.tag in shared:  # the first row makes the alpha search
                train_student(row.ctx, teacher_mlm, teacher, row.tag, row.variant, row.seed, shared_only=True)
        for future in [pool.submit(_train_row, row, teacher_mlm, teacher) for row in longest_first(rows, shared)]:
            future.result()  # the first failure is raised here, and leaving `workers` stops the others
    return {"jobs": jobs, "threads_each": threads, "rows": len(rows)}


def longest_first(rows: list[Row], shared: set[str]) -> list[Row]:
    """The rows in the order the workers take them: first those that train their own stage 1 against the
    teacher in the worker (the teacher runs live in a masked-LM stage: in the default run KD only's stage 1
    took 46 s of its 156 s on one thread, the other rows 115-142 s in all), then the rest in the run's
    order. Taken in the run's order, the two workers ended 40 s apart (257 and 296 s)."""
    def own_stage1_with_teacher(i: int, row: Row) -> bool:
        if i == 0 or row.variant.tag in shared or row.variant.stage1_from is not None:
            return False  # trained here first, or loaded
        stage1 = [s for s in row.ctx.config.stages if s.kind == "distill-mlm"]
        return bool(stage1) and replace(stage1[0], **row.variant.stage).reads_teacher

    first = [own_stage1_with_teacher(i, row) for i, row in enumerate(rows)]
    return [row for row, f in zip(rows, first) if f] + [row for row, f in zip(rows, first) if not f]


ROWS_DIED = ("a process training student rows side by side died (killed, or out of memory?); finished stages "
             "are kept: --resume continues, --jobs 1 trains one row at a time")


@contextlib.contextmanager
def workers(jobs: int, threads: int, died: str = ROWS_DIED):
    """`jobs` spawned workers (torch's pickling: tensors go through shared memory, not copied), stopped
    on the way out whatever happened (a failure, Ctrl-C, SIGTERM: the rows' checkpoints stay). A worker
    that dies (killed, out of memory) is an AfroCometError saying `died`, not a wait for an answer that
    never comes. A normal end lets the workers finish and leave; any other stops them with SIGKILL: a
    worker still starting may not have set its signals yet (`_start_worker`), and the command's handler
    would print a line for it; every write is atomic."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    import torch.multiprocessing as mp

    from afrocomet import quiet

    start = (threads, logging.getLogger("afrocomet").getEffectiveLevel(), quiet.cli_state())
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_start_worker, initargs=start)
    for _ in range(jobs):  # the pool starts a worker per task waiting for one: all of them, now
        pool.submit(int)
    # the pool never replaces a worker (a dead one breaks it), so these are all there will be; stopped
    # below ourselves, as Python < 3.14 has no terminate_workers() and a broken pool forgets its own
    processes = list(pool._processes.values())
    try:
        yield pool
        # a normal end: each worker leaves as Python does, its finalizers run (a killed one leaves what it
        # registered with the resource tracker, which then warns at exit)
        pool.shutdown(wait=True, cancel_futures=True)
    except BrokenProcessPool as e:
        raise AfroCometError(died) from e
    finally:
        manager = pool._executor_manager_thread  # shutdown forgets it
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        # the pool's thread reaps the workers too (a broken pool joins them): waiting for it first, as two
        # threads waiting on one process race (the loser's join returns early, and the dead worker stays
        # listed as running)
        if manager is not None:
            manager.join(timeout=30)
        for process in processes:
            process.join()


class _RowName(logging.Filter):
    """Each log line of a worker starts with the row it trains."""

    name_now = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if self.name_now:
            record.msg, record.args = f"{self.name_now}: {record.getMessage()}", None
        return True


_ROW = _RowName()
_WORKER_OUTPUT = contextlib.ExitStack()  # held for the worker's life (a dropped one would close at once)


def _start_worker(threads: int, level: int, cli: tuple[bool, bool]) -> None:
    """A worker's set-up: its threads, afrocomet's log lines and warnings as in the parent, and the signals
    left to the run: a Ctrl-C or a SIGTERM to the process group reaches every worker, and the run alone
    says so (and then stops them). Started as the `afrocomet` command, a spawned worker imports the
    command's module, which installs the command's handlers: each worker would say it too."""
    import signal
    import threading

    from tqdm import tqdm

    from afrocomet import quiet

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's lock would be a multiprocessing one (a named semaphore): a worker killed holding it leaves the
    # resource tracker to warn of a leaked semaphore as the run exits. Each worker writes its own lines.
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    active, verbose = cli
    if active:  # the worker's life: the CLI's routing of warnings and library noise
        _WORKER_OUTPUT.enter_context(quiet.cli_output(verbose))
    else:
        logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger = logging.getLogger("afrocomet")
    logger.setLevel(level)
    logger.addFilter(_ROW)


def _train_row(row: Row, teacher_mlm, teacher) -> None:
    from afrocomet.distill import steplog

    _ROW.name_now = steplog.ROW = row.variant.system + row.tag[len(row.variant.tag):]
    train_student(row.ctx, teacher_mlm, teacher, row.tag, row.variant, row.seed)
