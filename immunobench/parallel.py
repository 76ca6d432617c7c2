"""A grid's missing stages computed in worker processes, one intra-op thread each.

Why processes and not torch's threads: tiny-sd's stages are small-batch work (a LoRA step is a
batch of 4, a MIMA loss a batch of 1–6 on 16×16 latents), and a second intra-op thread buys
little on them. Measured 2026-12-05 on 2 cores (benchmarks/results/bench_cell.json): a second
thread made a LoRA step 1.22× and a MIMA outer step 1.16× faster, sampling 1.57×; two
single-threaded processes, one per core, got 1.64×, 1.65× and 1.27× the throughput of one
two-threaded process. One thread per stage also makes the scores independent of the machine's
core count (float reductions split by thread count differ in the last bits; 1 vs 2 threads moved
a golden score by 1.0e-4, a full-size one by 2.6e-4).

The runner plans (which image sets, start models and cells are missing from the store), the
workers compute them into the shared store (its writes are atomic), and the runner then walks the
grid as usual, finding everything cached. A worker that dies leaves its work to that final walk.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(requested: int, device: str, jobs: int) -> int:
    """``requested`` if set; else one per core on CPU (never more than the jobs), one on a GPU."""
    if requested:
        return requested
    if not device.startswith("cpu"):
        return 1
    return max(1, min(usable_cores(), jobs))


def single_threaded() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def _exit_with_parent(parent: int) -> None:
    """A SIGKILLed runner must not leave workers writing into the store behind its back."""
    try:  # Linux: the kernel kills us with the parent
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)

    def watch():  # elsewhere: poll
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


_RUNNER = None


def _init(runner_cls, cfg, plugin_files: list[str], plugin_modules: list[str], parent: int) -> None:
    import importlib

    from .plugins import discover, load_plugin_file
    from .progress import Progress

    _exit_with_parent(parent)
    single_threaded()
    discover()
    for path in plugin_files:
        load_plugin_file(path)
    for module in plugin_modules:
        importlib.import_module(module)
    global _RUNNER
    _RUNNER = runner_cls(cfg, Progress(False), log=lambda _: None)
    _RUNNER.prepare()


def _job(job: tuple) -> dict[str, Any]:
    """Runs one job; returns what it computed (stats, keys) or the failure, never raises."""
    from .errors import describe_failure

    runner = _RUNNER
    runner.stats = {"computed": {}, "cached": {}}
    runner.computed_keys = []
    failure = None
    try:
        runner.run_job(job)
    except Exception as exc:  # noqa: BLE001 — reported to the parent, which records it
        failure = describe_failure(exc)
    return {"job": job, "computed": runner.stats["computed"], "keys": runner.computed_keys, "failure": failure}


def run_jobs(runner_cls, cfg, phases: list[tuple[str, list[tuple], list[int]]], workers: int, plugin_files: list[str],
             plugin_modules: list[str], progress, on_result) -> None:
    """Runs each phase's jobs (largest weight first) in ``workers`` processes, each holding a
    ``runner_cls(cfg)`` (the runner passes ``Runner``: this module never imports it); phases in order.

    ``phases`` holds (name, jobs, weights); ``on_result`` receives each job's result dict.
    Raises ``concurrent.futures.process.BrokenProcessPool`` if a worker dies.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init,
                               initargs=(runner_cls, cfg, plugin_files, plugin_modules, os.getpid()))
    try:
        for name, jobs, weights in phases:
            if not jobs:
                continue
            bar = progress.task(name, total=sum(weights))
            order = sorted(range(len(jobs)), key=lambda i: -weights[i])  # longest first: the tail stays short
            pending = {pool.submit(_job, jobs[i]): weights[i] for i in order}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    weight = pending.pop(future)
                    on_result(future.result())
                    bar.advance(weight)
            bar.close()
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):  # interrupted: stop at once
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
