"""One fan-out layer for independent runs: this process, local processes, or a Dask cluster.

Every command that runs independent pieces (``compare`` over kernels and seeds,
``selftest`` runs, ``check`` subtrees, ``replay`` of several recordings, ``sweep``)
hands :func:`run` a module-level function and a list of picklable items. The
items are cut into batches (one task per batch: a task costs about a millisecond
of scheduling, a run of the model much more), the batches go to

* this process, in order (``--jobs 1``: the reference);
* a pool of ``--jobs N`` local processes (default: the usable cores);
* a Dask distributed cluster (``--scheduler tcp://HOST:8786`` or ``RSEQLAB_SCHEDULER``),
  whose scheduler retries a task when a worker dies;

and the results come back as they finish. Each result is stored at the index of
its item, never in arrival order, so the output is the same byte for byte
whatever the number of workers and the order they finish in; an item that comes
back twice (a retried task whose first copy did finish) is stored once. Ctrl-C
raises :class:`Interrupted`, which carries the results that had finished.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadInput, ExitStatus, RseqlabError

#: The environment variable that names a Dask scheduler when ``--scheduler`` is not given.
SCHEDULER_ENV = "RSEQLAB_SCHEDULER"
#: Tasks per worker when the batch size is not given: enough to balance uneven runs and to
#: stream results (a task costs about a millisecond, a run of the model tens or more).
TASKS_PER_WORKER = 32
#: How often the Dask scheduler runs a task again whose worker died (the engine's retries).
RETRIES = 3


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


class Interrupted(RseqlabError):
    """Ctrl-C during a fan-out: ``done`` maps item index to the results that had finished."""

    status = ExitStatus.INTERRUPTED

    def __init__(self, done: dict[int, Any], total: int) -> None:
        super().__init__(f"interrupted: {len(done)} of {total} runs had finished")
        self.done = done
        self.total = total


@dataclass(frozen=True)
class Fanout:
    """Where the runs go: ``jobs`` local processes (1: this process), or a Dask scheduler."""

    jobs: int = 1
    scheduler: str | None = None
    #: Runs per task; None: about :data:`TASKS_PER_WORKER` tasks per worker.
    batch: int | None = None

    @classmethod
    def from_options(cls, jobs: int | None, scheduler: str | None = None, batch: int | None = None) -> Fanout:
        """``--jobs`` (None: the usable cores) and ``--scheduler`` (None: ``RSEQLAB_SCHEDULER``)."""
        if jobs is not None and jobs < 1:
            raise BadInput(f"--jobs: expected a positive number, got {jobs}")
        if batch is not None and batch < 1:
            raise BadInput(f"--batch: expected a positive number, got {batch}")
        scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
        if scheduler is not None and "://" not in scheduler:
            raise BadInput(f"--scheduler {scheduler!r}: expected an address like tcp://HOST:8786")
        return cls(usable_cores() if jobs is None else jobs, scheduler, batch)

    @property
    def serial(self) -> bool:
        return self.scheduler is None and self.jobs == 1

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"Dask scheduler {self.scheduler}"
        return "this process" if self.jobs == 1 else f"{self.jobs} local processes"


def _batches(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def _batch_size(fan: Fanout, n: int, workers: int) -> int:
    if fan.batch is not None:
        return fan.batch
    return max(1, -(-n // (max(1, workers) * TASKS_PER_WORKER)))


def run_batch(fn: Callable[[Any], Any], start: int, items: list[Any]) -> list[tuple[int, Any]]:
    """One task: ``fn`` over consecutive items, each result with its item's index."""
    return [(start + i, fn(item)) for i, item in enumerate(items)]


def run(fn: Callable[[Any], Any], items: Sequence[Any], fan: Fanout | None = None, *,
        on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``[fn(item) for item in items]``, fanned out as ``fan`` says; ``on_result(index, result)``
    is called in this process as each result arrives (for progress)."""
    fan = fan or Fanout()
    items = list(items)
    done: dict[int, Any] = {}

    def keep(index: int, result: Any) -> None:
        if index not in done:  # a retried task whose first copy also finished
            done[index] = result
            if on_result is not None:
                on_result(index, result)

    try:
        if fan.scheduler is not None:
            _run_dask(fn, items, fan, keep)
        elif fan.jobs == 1 or len(items) <= 1:
            for index, item in enumerate(items):
                keep(index, fn(item))
        else:
            _run_local(fn, items, fan, keep)
    except KeyboardInterrupt:
        raise Interrupted(done, len(items)) from None
    missing = [i for i in range(len(items)) if i not in done]
    if missing:  # never expected: every task either returns all its items or raises
        raise RseqlabError(f"fan-out lost {len(missing)} of {len(items)} runs")
    return [done[i] for i in range(len(items))]


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (no traceback from each)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_local(fn, items: list[Any], fan: Fanout, keep) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    size = _batch_size(fan, len(items), fan.jobs)
    pool = ProcessPoolExecutor(max_workers=min(fan.jobs, len(items)), initializer=_ignore_sigint)
    try:
        pending = {pool.submit(run_batch, fn, b.start, items[b.start:b.stop]) for b in _batches(len(items), size)}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                for index, result in future.result():
                    keep(index, result)
    except BaseException:
        # NOTE: the pool has no public way to stop a running task; its worker processes are
        # ours, so they are ended here rather than left to finish their batches.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _run_dask(fn, items: list[Any], fan: Fanout, keep) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - a pinned dependency
        raise BadInput("--scheduler needs the 'distributed' package (pip install rseqlab)") from None
    try:
        client = Client(fan.scheduler, timeout="5s", set_as_default=False)
    except OSError as exc:
        raise BadInput(f"--scheduler {fan.scheduler}: cannot reach the Dask scheduler ({exc})") from None
    try:
        workers = sum(client.nthreads().values())
        size = _batch_size(fan, len(items), workers)
        futures = [client.submit(run_batch, fn, b.start, items[b.start:b.stop], pure=False, retries=RETRIES)
                   for b in _batches(len(items), size)]
        try:
            for future in as_completed(futures, loop=client.loop):
                for index, result in future.result():
                    keep(index, result)
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        client.close()


def parse_seeds(text: str) -> list[int]:
    """``0-99``, ``1,5,9``, ``0-3,10``: the seeds in the order given (duplicates refused)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                a, b = int(lo), int(hi)
                if b < a:
                    raise BadInput(f"--seeds {text!r}: the range {part} is empty")
                seeds += range(a, b + 1)
            else:
                seeds.append(int(part))
        except ValueError:
            raise BadInput(f"--seeds {text!r}: expected seeds like 0-99 or 1,5,9") from None
    if any(s < 0 for s in seeds):
        raise BadInput(f"--seeds {text!r}: seeds are >= 0")
    if len(set(seeds)) != len(seeds):
        raise BadInput(f"--seeds {text!r}: a seed is repeated")
    if len(seeds) > 100_000:
        raise BadInput(f"--seeds {text!r}: at most 100000 seeds")
    return seeds
