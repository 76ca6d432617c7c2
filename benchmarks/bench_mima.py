"""One MIMA outer step for N = 2, 3, 5, 10 concepts against N separate single-concept steps.

The critique of MIMA asks whether it scales to 5–10 concepts. Each N immunizes the first N
concepts of relearn-object (it has ten) with ``defenses/mima.py`` itself (tiny-sd preset, prior
preservation on, the merge of all N), timing each outer step through the defense's own progress
callback; the single-concept reference immunizes each concept alone the same way. Every
configuration runs in a fresh process (one intra-op thread, as the runner's workers) so its peak
resident memory is its own: peak RSS during ``immunize`` minus the RSS before it. The FLOPs of one
step (``torch.utils.flop_counter``: immunize with 2 steps minus 1 step) give its achieved FLOP/s as a
fraction of the 1-thread matmul peak. Writes benchmarks/results/bench_mima.json.

    .venv/bin/python benchmarks/bench_mima.py [--sizes 2 3 5 10] [--steps 6] [--images 4]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import RESULTS, StepClock, defense_view_of, host, matmul_peak, stage_flops  # noqa: E402

TASK = "relearn-object"


def _group(targets: list[str]):
    from immunobench.cards import ConceptGroup, get_card

    card = get_card(TASK)
    return ConceptGroup(TASK, f"{len(targets)}c-bench", tuple(targets),
                        tuple(c for c in card.concepts if c not in targets), card)


def _make_data(path: Path, images: int) -> None:
    """Defense images of every concept and the regularization set, drawn by the base model."""
    from immunobench.backbones import load_backbone
    from immunobench.cards import get_card
    from immunobench.diffusion import sample

    model = load_backbone("tiny-sd")
    card = get_card(TASK)
    group = _group(list(card.concepts))
    out = {}
    for i, c in enumerate(card.concepts):
        prompt = group.prompt(c, phase="defense")
        out[c] = (sample(model, [prompt] * images, [1000 + i * 100 + k for k in range(images)], batch_size=16), prompt)
    reg = card.regularization.prompt
    out["__regularization__"] = (sample(model, [reg] * images, [5000 + k for k in range(images)], batch_size=16), reg)
    torch.save(out, path)


def _child(data_path: str, targets: list[str], steps: int, flops: bool) -> dict:
    """In a fresh process: immunize ``targets`` (one group) and report step times, peak RSS, FLOPs."""
    from immunobench.defenses.mima import MIMA
    from immunobench.backbones import load_backbone
    from immunobench.data import ConceptImages, TaskData
    from immunobench.plugins import configure
    from immunobench.runner import _PeakMemory

    torch.set_num_threads(1)
    model = load_backbone("tiny-sd")
    saved = torch.load(data_path)
    data = TaskData()
    for c in targets:
        x, prompt = saved[c]
        data.defense[c] = ConceptImages(x, [prompt] * len(x))
    x, prompt = saved["__regularization__"]
    data.regularization = ConceptImages(x, [prompt] * len(x))
    group = _group(targets)
    cfg = configure(MIMA, "tiny-sd", "relearn", {"steps": steps})
    view = defense_view_of(group, data)
    plugin, clock = MIMA(), StepClock()
    plugin.progress = clock
    with _PeakMemory("cpu") as usage:
        before = usage.peak
        plugin.immunize(model, view, cfg)
    result = {"targets": targets, "step_seconds": statistics.median(clock.step_seconds()),
              "peak_rss_increase_mb": round((usage.peak - before) / 2**20, 1)}
    if flops:
        one = stage_flops(lambda: MIMA().immunize(model, view, configure(MIMA, "tiny-sd", "relearn", {"steps": 1})))
        two = stage_flops(lambda: MIMA().immunize(model, view, configure(MIMA, "tiny-sd", "relearn", {"steps": 2})))
        result["flops_per_step"] = two - one
    return result


def _spawn(data_path: Path, targets: list[str], steps: int, flops: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", str(data_path), "--steps", str(steps), *(["--flops"] if flops else []),
           "--targets", *targets]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 3, 5, 10])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--images", type=int, default=4, help="defense and regularization images per concept")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--targets", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.targets, args.steps, args.flops)))
        return

    from immunobench.cards import get_card

    torch.set_num_threads(1)
    concepts = list(get_card(TASK).concepts)
    peak = matmul_peak(threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "data.pt"
        _make_data(data_path, args.images)
        singles = {}
        for c in concepts[: max(args.sizes)]:
            singles[c] = _spawn(data_path, [c], args.steps)
            print(f"single {c}: {singles[c]['step_seconds']:.3f} s/step, +{singles[c]['peak_rss_increase_mb']} MB", flush=True)
        rows = []
        for n in args.sizes:
            joint = _spawn(data_path, concepts[:n], args.steps, flops=True)
            separate = [singles[c] for c in concepts[:n]]
            sep_s = sum(s["step_seconds"] for s in separate)
            gflops = joint["flops_per_step"] / joint["step_seconds"] / 1e9
            rows.append({"concepts": n, "joint_step_seconds": round(joint["step_seconds"], 4),
                         "separate_steps_seconds": round(sep_s, 4),
                         "joint_over_separate": round(joint["step_seconds"] / sep_s, 3),
                         "joint_peak_rss_increase_mb": joint["peak_rss_increase_mb"],
                         "separate_peak_rss_increase_mb": max(s["peak_rss_increase_mb"] for s in separate),
                         "flops_per_step": joint["flops_per_step"], "gflops_per_s": round(gflops, 2),
                         "fraction_of_peak": round(gflops / peak, 3)})
            print(f"N={n}: joint {joint['step_seconds']:.3f} s, separate {sep_s:.3f} s; "
                  f"peak +{joint['peak_rss_increase_mb']} MB; {gflops:.1f} GFLOP/s ({gflops / peak:.0%})", flush=True)
    result = {"what": "one MIMA outer step (tiny-sd preset, prior on, merge of all N) vs N single-concept steps, "
                      f"{TASK}'s first N concepts, {args.images} defense images each; one intra-op thread",
              "date": time.strftime("%Y-%m-%d"), "host": host(), "matmul_peak_1_thread_gflops_per_s": peak,
              "steps_timed": args.steps - 1, "rows": rows}
    out = RESULTS / "bench_mima.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"→ {out}")


if __name__ == "__main__":
    main()
