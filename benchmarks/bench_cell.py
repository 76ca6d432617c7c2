"""One relearn-style cell's stages: wall time, peak RSS, and the UNet-heavy stages' FLOP/s against the machine.

Part 1, the cell: ``immunobench run --task relearn-style --groups 2c-1 --workers 1`` on an empty
store (the none and MIMA cells of one group, LoRA attack), with every stage's seconds and peak RSS
from the run's manifest and store.

Part 2, the UNet-heavy stages, each in fresh processes: sampling (one batch of 16 of the card's
prompts, 25 DDIM steps, guidance pair in one call), a LoRA attack step (``attacks/lora.py``, batch 4)
and a MIMA outer step (``defenses/mima.py``, 2 concepts, prior on, tiny-sd preset). Image content
does not change their cost, so they train on random images of the right shape. Each is timed
    - with 1 and with all intra-op threads (what a second thread buys),
    - with 1 thread and glibc's allocator tuned for large tensors (a lever measured, not adopted),
    - as the runner runs it: one single-threaded process per core, all at once,
and its FLOPs are counted with ``torch.utils.flop_counter`` (matmuls, convolutions, attention), so
the achieved FLOP/s can be read as a fraction of the measured fp32 matmul peak of the same threads.
Writes benchmarks/results/bench_cell.json.

    .venv/bin/python benchmarks/bench_cell.py [--skip-cell]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import RESULTS, StepClock, defense_view_of, host, matmul_peak, stage_flops  # noqa: E402

STAGES = ("sampling", "lora_step", "mima_step")
GROUP = "2c-1"


def _random_images(n: int, resolution: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _measure(stage: str) -> dict:
    """Seconds per unit (an image, a step) and FLOPs per unit of one stage, in this process."""
    from immunobench.backbones import load_backbone
    from immunobench.cards import get_card
    from immunobench.data import ConceptImages, TaskData
    from immunobench.diffusion import sample
    from immunobench.plugins import configure

    model = load_backbone("tiny-sd")
    card = get_card("relearn-style")
    group = card.group(GROUP)
    res = model.resolution
    if stage == "sampling":
        prompts = [group.prompt(c) for c in card.concepts for _ in range(2)]
        seeds = list(range(len(prompts)))

        def run():
            sample(model, prompts, seeds, batch_size=16)

        run()  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        return {"unit": "image", "seconds": min(times) / len(prompts), "flops": stage_flops(run) / len(prompts)}

    data = TaskData()
    for i, c in enumerate(group.targets):
        for role, n in (("attack", card.data.attack_images), ("defense", card.data.defense_images)):
            prompt = group.prompt(c, phase=role)
            getattr(data, role)[c] = ConceptImages(_random_images(n, res, i), [prompt] * n)
    reg = card.regularization
    data.regularization = ConceptImages(_random_images(reg.images, res, 99), [reg.prompt] * reg.images)
    if stage == "lora_step":
        from immunobench.attacks.lora import LoRA

        cfg = configure(LoRA, "tiny-sd", "relearn", None)
        steps = LoRA().adapt(model, group, data, cfg, checkpoints=range(1, 100_000))  # a step per yield
        for _ in range(5):
            next(steps)
        times = []
        for _ in range(40):
            t = time.perf_counter()
            next(steps)
            times.append(time.perf_counter() - t)
        return {"unit": "step", "seconds": statistics.median(times), "flops": stage_flops(lambda: next(steps))}
    if stage == "mima_step":
        from immunobench.defenses.mima import MIMA

        view = defense_view_of(group, data)

        def immunize(steps: int, progress=None):
            plugin = MIMA()
            plugin.progress = progress
            plugin.immunize(model, view, configure(MIMA, "tiny-sd", "relearn", {"steps": steps}))

        clock = StepClock()
        immunize(8, clock)
        flops = stage_flops(lambda: immunize(2)) - stage_flops(lambda: immunize(1))
        return {"unit": "step", "seconds": statistics.median(clock.step_seconds()), "flops": flops}
    raise ValueError(stage)


def _child(stage: str, threads: int, tuned: bool) -> dict:
    from _bench import tune_allocator

    torch.set_num_threads(threads)
    if tuned:
        tune_allocator()
    return {"stage": stage, "threads": threads, "allocator_tuned": tuned, **_measure(stage)}


def _spawn(stage: str, threads: int, tuned: bool, copies: int = 1) -> list[dict]:
    """``copies`` children at once (the runner's workers), each reporting its own rate."""
    cmd = [sys.executable, __file__, "--child", stage, "--threads", str(threads), *(["--tuned"] if tuned else [])]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _cell(store: Path, out: Path) -> dict:
    """The two cells of one group on an empty store, in one process: each stage's cost."""
    cmd = [sys.executable, "-m", "immunobench.cli", "run", "--task", "relearn-style", "--defense", "mima", "--groups",
           GROUP, "--workers", "1", "--store", str(store), "--out", str(out), "--name", "cell", "--quiet"]
    started = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - started
    manifest = json.loads((out / "cell" / "manifest.json").read_text())
    stages = []
    for meta in sorted(store.glob("??/*/meta.json")):
        m = json.loads(meta.read_text())
        what = m.get("role") or m.get("defense") or m.get("attack") or ""
        stages.append({"stage": m["stage"], "what": what, **m["cost"]})
    return {"command": " ".join(["immunobench", *cmd[3:]]), "wall_seconds": round(wall, 1),
            "by_stage": manifest["timings"]["computed"], "artifacts": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cell", action="store_true", help="only the stage measurements (part 2)")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.threads, args.tuned)))
        return

    cores = len(os.sched_getaffinity(0))
    peak = {"1_thread": matmul_peak(1), f"{cores}_threads": matmul_peak(cores)}
    print(f"fp32 matmul peak: {peak}", flush=True)
    result = {"what": __doc__.split("\n\n")[0], "date": time.strftime("%Y-%m-%d"), "host": host(),
              "matmul_peak_gflops_per_s": peak, "stages": {}}
    for stage in STAGES:
        one = _spawn(stage, 1, False)[0]
        many = _spawn(stage, cores, False)[0]
        tuned = _spawn(stage, 1, True)[0]
        workers = _spawn(stage, 1, False, copies=cores)
        flops = one["flops"]
        rate = lambda r: flops / r["seconds"] / 1e9  # noqa: E731
        together = sum(rate(w) for w in workers)
        row = {
            "unit": one["unit"], "flops_per_unit": flops,
            "seconds_per_unit": {"1_thread": one["seconds"], f"{cores}_threads": many["seconds"],
                                 "1_thread_tuned_allocator": tuned["seconds"],
                                 f"{cores}_workers_each": [w["seconds"] for w in workers]},
            "gflops_per_s": {"1_thread": round(rate(one), 2), f"{cores}_threads": round(rate(many), 2),
                             "1_thread_tuned_allocator": round(rate(tuned), 2),
                             f"{cores}_workers_together": round(together, 2)},
            "fraction_of_peak": {"1_thread": round(rate(one) / peak["1_thread"], 3),
                                 f"{cores}_threads": round(rate(many) / peak[f"{cores}_threads"], 3),
                                 f"{cores}_workers_together": round(together / peak[f"{cores}_threads"], 3)},
            "second_thread_speedup": round(one["seconds"] / many["seconds"], 3),
            "allocator_speedup": round(one["seconds"] / tuned["seconds"], 3),
            "workers_over_threads_throughput": round(together / rate(many), 3),
        }
        result["stages"][stage] = row
        print(f"{stage}: {row['gflops_per_s']} GFLOP/s; fraction of peak {row['fraction_of_peak']}", flush=True)
    if not args.skip_cell:
        with tempfile.TemporaryDirectory() as tmp:
            result["cell"] = _cell(Path(tmp) / "store", Path(tmp) / "runs")
        print(f"cell {GROUP} (none + mima, one process): {result['cell']['wall_seconds']} s", flush=True)
    out = RESULTS / "bench_cell.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"→ {out}")


if __name__ == "__main__":
    main()
