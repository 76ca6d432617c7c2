"""Shared by the bench_*.py scripts: where results go, the host, the matmul peak and FLOP counting."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def host() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "python": platform.python_version()}


def matmul_peak(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """Best GFLOP/s of an n×n fp32 matmul with ``threads`` intra-op threads: the machine's practical limit."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return round(2 * n**3 / best / 1e9, 1)


def tune_allocator() -> bool:
    """glibc malloc with a fixed mmap threshold and a kept top pad (M_MMAP_THRESHOLD 32 MiB,
    M_TRIM_THRESHOLD 1 GiB, M_TOP_PAD 256 MiB), measured as a lever; False where not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in ((-3, 32 * 2**20), (-1, 2**30), (-2, 256 * 2**20)))


def _seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _sdpa_cpu_flops(query, key, value, *args, **kwargs) -> int:  # FlopCounterMode passes shapes
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def stage_flops(fn: Callable[[], object]) -> int:
    """FLOPs ``fn`` runs, by ``torch.utils.flop_counter`` (matmuls, convolutions, attention; elementwise
    ops uncounted). PyTorch's table lacks the CPU flash-attention kernels; they get its SDPA formula."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


class StepClock:
    """A stand-in for ``immunobench.progress.Progress`` whose task records when each step ends."""

    def __init__(self):
        self.marks: list[float] = []

    def task(self, name, total, done=0):
        self.marks = [time.perf_counter()]
        return self

    def advance(self, n=1, **_):
        self.marks.append(time.perf_counter())

    def close(self):
        pass

    def step_seconds(self) -> list[float]:
        """Seconds of each step but the first (warm-up)."""
        return [b - a for a, b in zip(self.marks, self.marks[1:])][1:]


def defense_view_of(group, data):
    """The ``DefenseData`` the runner would give a defense on tiny-sd (generic captions included)."""
    from immunobench.captions import all_card_names, generic_captions, scored_names
    from immunobench.data import defense_view
    from immunobench.plugins import get_backbone

    captions, source = generic_captions(get_backbone("tiny-sd")(), all_card_names() | scored_names([group.card]))
    return defense_view(group, data.defense, data.regularization, tuple(captions), source)
