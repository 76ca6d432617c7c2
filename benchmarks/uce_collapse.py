"""How far UCE pulls a group's erased targets together in cross-attention, per model copy.

Joint re-learning must pull the targets apart again. Per world-check group: the targets' and the
other concepts' prompts through every cross-attention K and V projection (all 77 rows), before and
after UCE (as configured for tiny-sd); the figure is the mean distance between two targets' outputs divided by
the mean distance between a target's and another concept's, averaged over layers (1: targets as far
apart as from anything else; 0: one point). Also the centred cosine of the targets' text embeddings.
Writes benchmarks/results/uce_collapse.json (or ``--out``).

    .venv/bin/python benchmarks/uce_collapse.py --weights shipped /tmp/v2s1_vae4k/tiny-sd
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from immunobench.cards import get_card
from immunobench.diffusion import encode_prompts
from immunobench.plugins import discover
from immunobench.world.check import RELEARN_GROUPS, uce_erased

from uce_residual import tiny_sd


def _cross_kv(unet: torch.nn.Module, cond: torch.Tensor) -> list[torch.Tensor]:
    return [m(cond) for name, m in unet.named_modules() if name.endswith(("attn2.to_k", "attn2.to_v"))]


def _spread(outputs: list[torch.Tensor], n_targets: int) -> float:
    """Mean target–target distance over mean target–other distance, averaged over layers."""
    pairs = list(itertools.combinations(range(n_targets), 2))
    ratios = []
    for k in outputs:
        within = sum(float((k[i] - k[j]).norm()) for i, j in pairs) / len(pairs)
        across = [float((k[i] - k[o]).norm()) for i in range(n_targets) for o in range(n_targets, len(k))]
        ratios.append(within / (sum(across) / len(across)))
    return sum(ratios) / len(ratios)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", nargs="+", default=["shipped"], help="'shipped' or `world train --out` folders")
    ap.add_argument("--out", default="benchmarks/results/uce_collapse.json")
    args = ap.parse_args()
    discover()
    rows = []
    for weights in args.weights:
        model = tiny_sd(weights)
        for task, names in RELEARN_GROUPS.items():
            for name in names:
                group = get_card(task).group(name)
                prompts = [group.prompt(c) for c in (*group.targets, *group.others)]
                cond = encode_prompts(model, prompts)
                n = len(group.targets)
                centred = (cond - cond.mean(0, keepdim=True)).flatten(1)
                cos = torch.nn.functional.cosine_similarity(centred[:, None], centred[None], dim=-1)
                text_cos = sum(float(cos[i, j]) for i, j in itertools.combinations(range(n), 2)) / (n * (n - 1) / 2)
                rows.append({"weights": weights, "fingerprint": model.provenance()["fingerprint"], "task": task,
                             "group": name, "text_centred_cosine": round(text_cos, 3),
                             "spread_before": round(_spread(_cross_kv(model.unet, cond), n), 3),
                             "spread_after_uce": round(_spread(_cross_kv(uce_erased(model, group).unet, cond), n), 3)})
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
