"""MIMA's merge data: |C_reg| (none, 50, 200, 1000 generic captions) and the rows of C (the concept's
own tokens vs every token of its prompt), on one group, selection seeds only.

The critique of MIMA asks how much the merge depends on its regularization captions; this sweep
answers it on tiny-sd with MSGR, MRSGR, the accuracies before and after the attack, and the
merge's condition numbers (cond(Q), Q = C_regᵀC_reg + λI, and cond(S), S = C Q⁻¹ Cᵀ), and how far each
setting's immunized weights lie from the 200-caption setting's, as a share of MIMA's whole update. The world's
caption language holds 296 distinct captions of concepts that no card scores, so the 1000 point
gets those 296: it is reported as such, not padded with repeats (a caption set repeated k times
scales Q and the relative ridge alike, which leaves the merge unchanged).
Writes benchmarks/results/mima_regularization.json.

    .venv/bin/python benchmarks/mima_regularization.py [--group 2c-1] [--store DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import fmean

sys.path.insert(0, str(Path(__file__).parent))
from _sweep import summary, sweep, write  # noqa: E402

CAPTION_COUNTS = (0, 50, 200, 1000)


def weight_distance(result: dict, label: str, reference: str, store: str) -> float:
    """|θ_label − θ_reference| / |θ_reference − θ_start| over the UNet tensors MIMA trains, mean over
    seeds: how far the merge's data moves the released weights, as a share of the whole update."""
    from immunobench.backbones import load_backbone
    from immunobench.store import Store

    artifacts, base = Store(store), load_backbone("tiny-sd").unet.state_dict()
    ratios = []
    for run, ref in zip(result["settings"][label]["per_seed"], result["settings"][reference]["per_seed"]):
        ours = artifacts.get(run["keys"]["immunize"][0]).tensors("unet")
        theirs = artifacts.get(ref["keys"]["immunize"][0]).tensors("unet")
        start = {**base, **artifacts.get(ref["keys"]["start"][0]).tensors("unet")}
        moved = sum(float(((ours[n].double() - theirs[n].double()) ** 2).sum()) for n in theirs)
        update = sum(float(((theirs[n].double() - start[n].double()) ** 2).sum()) for n in theirs)
        ratios.append((moved / update) ** 0.5)
    return float(f"{fmean(ratios):.3e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="relearn-style")
    ap.add_argument("--group", default="2c-1")
    ap.add_argument("--store", default=str(Path.home() / ".cache" / "immunobench" / "store"))
    ap.add_argument("--out", default="benchmarks/results/mima_regularization.json")
    args = ap.parse_args()
    settings = {f"captions={n}": {"regularization_captions": n} for n in CAPTION_COUNTS}
    settings["captions=200,rows=prompt"] = {"regularization_captions": 200, "merge_rows": "prompt"}
    result = sweep(args.task, args.group, args.store, "mima", settings)
    rows = summary(result, "mima", 400)
    for label, r in result["settings"].items():
        merges = [run["merge"] for run in r["per_seed"]]
        rows[label].update(cond_q=fmean(m["cond_q"] for m in merges), cond_s=fmean(m["cond_s"] for m in merges),
                           c_rows=merges[0]["c_rows"], c_reg_rows=merges[0]["c_reg_rows"],
                           c_reg_captions=merges[0]["c_reg_captions"])
    reference = "captions=200"
    for label in result["settings"]:
        rows[label]["weights_vs_captions_200"] = weight_distance(result, label, reference, args.store)
    result["summary"] = rows
    write(args.out, result)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
