"""Independent pieces of work (arm x fold trainings, search workers) in separate processes.

Processes are spawned, not forked (a forked copy of a process that holds Prefect's event loop,
MLflow's database connections or torch's thread pool is not safe), and each gets an equal share
of the CPU cores as torch threads, so ``workers`` processes never oversubscribe the machine.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes: an equal share of the CPU cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _init_worker(threads: int) -> None:
    import lightning.pytorch
    import torch

    torch.set_num_threads(threads)
    # Lightning's per-fit banners ("GPU available: ...") would repeat once per unit (its import
    # sets its loggers to INFO, so this comes after it).
    for name in (lightning.pytorch.__name__, "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The same filter the CLI and the tests set: lightning 2.6 warns about its own torch use.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def run_in_processes(
    fn: Callable[[Item], Result], items: Sequence[Item], workers: int
) -> list[Result]:
    """``[fn(item) for item in items]``, in up to ``workers`` spawned processes.

    With one worker (or one item) everything runs in this process. Results come back in the
    order of ``items``; ``fn`` and the items must be picklable (module-level functions,
    dataclasses). An exception raised by ``fn`` propagates: catch what an item may fail with
    inside ``fn``.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    count = min(workers, len(items))
    with ProcessPoolExecutor(
        max_workers=count,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads_per_worker(count),),
    ) as pool:
        return list(pool.map(fn, items))
