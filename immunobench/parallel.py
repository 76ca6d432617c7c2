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
import uuid
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


def _make_runner(runner_cls, cfg, plugin_files: list[str], plugin_modules: list[str]):
    """A prepared ``runner_cls(cfg)`` in a fresh worker: one thread, the run's plugins registered."""
    import importlib

    from .plugins import discover, load_plugin_file
    from .progress import Progress

    single_threaded()
    discover()
    for path in plugin_files:
        load_plugin_file(path)
    for module in plugin_modules:
        importlib.import_module(module)
    runner = runner_cls(cfg, Progress(False), log=lambda _: None)
    runner.prepare()
    return runner


def _init(runner_cls, cfg, plugin_files: list[str], plugin_modules: list[str], parent: int) -> None:
    _exit_with_parent(parent)
    global _RUNNER
    _RUNNER = _make_runner(runner_cls, cfg, plugin_files, plugin_modules)


def _job(job: tuple) -> dict[str, Any]:
    """Runs one job; returns what it computed (stats, keys) or the failure, never raises."""
    return _run(_RUNNER, job)


def _run(runner, job: tuple) -> dict[str, Any]:
    from .errors import describe_failure

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


# --- Ray ---------------------------------------------------------------------------------------
# Each job is a Ray task: one CPU (one GPU on CUDA), retried by Ray when its worker process dies
# (the store's atomic, race-safe puts make a retry, or two workers computing one key, harmless).
# A Ray worker process keeps its prepared runner between tasks, so the model loads once per process.
RAY_RETRIES = 3
_RAY_RUNNERS: dict[str, Any] = {}


def _plugin_paths(plugin_sources: list[tuple[str, str]]) -> list[str]:
    """The run's plugin files on this node: the driver's path where it holds the same source, else a
    copy of the source the driver shipped (a cluster node need not share the driver's disk)."""
    import hashlib
    import tempfile
    from pathlib import Path

    paths = []
    for path, source in plugin_sources:
        if Path(path).is_file() and Path(path).read_text() == source:
            paths.append(path)
            continue
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        copy = Path(tempfile.gettempdir()) / "immunobench-plugins" / digest / Path(path).name
        if not copy.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(source)
        paths.append(str(copy))
    return paths


def _ray_job(context: tuple, job: tuple, *after) -> dict[str, Any]:
    """One job in a Ray worker. ``context``: (run token, runner class, run config, plugin sources, plugin
    modules), the token one per ``run_jobs_ray`` call; ``after``: results of the jobs it waited for (unused)."""
    key, runner_cls, cfg, plugin_sources, plugin_modules = context
    if key not in _RAY_RUNNERS:
        _RAY_RUNNERS.clear()  # one run's runner per process at a time
        _RAY_RUNNERS[key] = _make_runner(runner_cls, cfg, _plugin_paths(plugin_sources), plugin_modules)
    return _run(_RAY_RUNNERS[key], job)


def ray_cluster(address: str, workers: int, log) -> tuple[Any, bool]:
    """(the ray module, whether this call started the instance): ``address`` joins a cluster ("auto", a
    head's "ray://host:10001"); empty starts a local instance with ``workers`` CPUs."""
    try:
        import ray
    except ImportError:
        from .errors import UserError

        raise UserError("--executor ray needs Ray: pip install ray==2.60.0 (or pip install -e '.[ray]')") from None
    if ray.is_initialized():
        return ray, False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        from .errors import UserError

        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise UserError(f"--executor ray: could not start or join {where} ({str(exc).splitlines()[0]}); "
                        "check --address (`ray status` on the head node)") from None
    resources = ray.cluster_resources()
    log(f"ray: {'joined ' + address if address else 'started a local instance'}; "
        f"{int(resources.get('CPU', 0))} CPU(s), {int(resources.get('GPU', 0))} GPU(s) in the cluster")
    return ray, True


def run_jobs_ray(runner_cls, cfg, phases: list[tuple[str, list[tuple], list[int]]], workers: int,
                 plugin_files: list[str], plugin_modules: list[str], progress, on_result,
                 needs=lambda job: [], shared_phases: int = 0, log=print) -> None:
    """``run_jobs`` on Ray: every job a task with its resource needs; ``needs(job)`` names jobs of
    earlier phases it waits for (a cell its immunization), so phases overlap where they may. The first
    ``shared_phases`` phases (the runner's image sets and start models, which every later job reads)
    finish, one after another, before the rest start. A task that still fails after
    ``RAY_RETRIES`` retries is logged and left to the runner's final walk, like a dead local worker."""
    from pathlib import Path

    ray, started_here = ray_cluster(cfg.address, workers, log)
    gpu = 1 if not cfg.device.startswith("cpu") else 0
    task = ray.remote(num_cpus=1, num_gpus=gpu, max_retries=RAY_RETRIES)(_ray_job)
    sources = [(path, Path(path).read_text()) for path in plugin_files]
    # serialized once, not once per task; the token tells a worker's cached runner which run it belongs to
    context = ray.put((uuid.uuid4().hex, runner_cls, cfg, sources, plugin_modules))
    refs: dict[tuple, Any] = {}

    def submit(name: str, jobs: list[tuple], weights: list[int]) -> dict:
        bar = progress.task(name, total=sum(weights))
        order = sorted(range(len(jobs)), key=lambda i: -weights[i])
        pending = {}
        for i in order:
            ref = task.remote(context, jobs[i], *[refs[d] for d in needs(jobs[i]) if d in refs])
            refs[jobs[i]] = ref
            pending[ref] = (jobs[i], weights[i], bar)
        return pending

    def drain(pending: dict) -> None:
        bars = {id(bar): bar for _, _, bar in pending.values()}
        left = {id(bar): sum(1 for _, _, b in pending.values() if b is bar) for bar in bars.values()}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job, weight, bar = pending.pop(ref)
                try:
                    on_result(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    log(f"ray: job {job[0]} {job[1:]} failed after {RAY_RETRIES} retries "
                        f"({str(exc).splitlines()[0]}); it is computed in this process")
                bar.advance(weight)
                left[id(bar)] -= 1
                if not left[id(bar)]:
                    bar.close()

    try:
        for phase in phases[:shared_phases]:
            if phase[1]:
                drain(submit(*phase))
        rest: dict = {}
        for phase in phases[shared_phases:]:
            if phase[1]:
                rest.update(submit(*phase))
        drain(rest)
    except BaseException:
        for ref in refs.values():
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
