"""Would rare tokens in the captions keep tiny-sd drawing the category under an identifier?

A first, cheap test of `world train --rare-token-captions`, short of training from scratch: the shipped
copy trains on for ``--steps`` UNet + text-encoder steps on the world's captions (batch 32, AdamW as in
`world train`, constant ``--lr``, 10% empty captions), once per ``--shares`` value — 0 is the control,
the same continued training without inserted tokens. Then, per arm, the world classifier judges
``--n`` generations per personal instance for its category under the card's attack prompt, its
defense prompt and no identifier (`identifier_prior.py`'s measure), and the drawing of a few
world concepts under their plain prompts. Writes benchmarks/results/rare_token_finetune.json.

    .venv/bin/python benchmarks/rare_token_finetune.py [--shares 0 0.3] [--steps 600] [--lr 1e-4]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from immunobench.cards import get_card
from immunobench.diffusion import diffusion_loss, encode_images, tokenize
from immunobench.plugins import discover
from immunobench.progress import Progress
from immunobench.world.check import EVAL_SEED0, _generate, _Judges
from immunobench.world.train import WorldTrainConfig, _to_tensor, insert_rare_tokens, pretraining_examples, unused_tokens

from identifier_prior import category_drawn
from uce_residual import tiny_sd

PLAIN = {"relearn-object": ("church", "tench", "parachute", "golf-ball"), "relearn-style": ("claude-monet", "van-gogh")}


def continue_training(model, latents, ids, share: float, steps: int, lr: float, progress: Progress) -> list[float]:
    cfg = WorldTrainConfig()
    unet, text_encoder = model.unet, model.text_encoder
    empty, ids = ids[-1], ids[:-1]
    pool = unused_tokens(ids, model.tokenizer)
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW([{"params": unet.parameters(), "weight_decay": 1e-2},
                             {"params": text_encoder.parameters(), "weight_decay": 0.0}], lr=lr)
    unet.train(), text_encoder.train()
    unet.requires_grad_(True), text_encoder.requires_grad_(True)
    g, g_tokens = torch.Generator().manual_seed(123), torch.Generator().manual_seed(456)
    losses, task = [], progress.task(f"share {share}", total=steps)
    for _ in range(steps):
        idx = torch.randint(0, len(latents), (cfg.unet_batch,), generator=g)
        batch = insert_rare_tokens(ids[idx], share, pool, g_tokens)  # its own generator: same batches in every arm
        batch[torch.rand(cfg.unet_batch, generator=g) < cfg.caption_dropout] = empty
        loss = diffusion_loss(unet, latents[idx], text_encoder(batch)[0], model.scheduler, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        task.advance(loss=losses[-1])
    task.close()
    unet.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False)
    return losses


def judged(model, judges: _Judges, n: int) -> dict:
    per, mean = category_drawn(model, judges, n)
    plain = {}
    for task, concepts in PLAIN.items():
        task_card = get_card(task)
        images = _generate(model, [task_card.prompt_for(c) for c in concepts], EVAL_SEED0, n)
        plain.update({c: round(judges.accuracy(x, c), 3) for c, x in zip(concepts, images)})
    return {"identifier_prior_mean": mean, "identifier_prior": per, "plain_drawing": plain}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.3])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--images-per-concept", type=int, default=40)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/rare_token_finetune.json")
    args = ap.parse_args()
    discover()
    progress = Progress()
    examples = pretraining_examples(args.images_per_concept, seed=0, progress=progress)
    base = tiny_sd("shipped")
    judges = _Judges(base.spec.metric_family)
    with torch.no_grad():
        images = _to_tensor([image for image, _ in examples])
        latents = torch.cat([encode_images(base, images[i : i + 256]) for i in range(0, len(images), 256)])
    ids = tokenize(base, [caption for _, caption in examples] + [""])
    arms = [{"share": None, **judged(base, judges, args.n)}]  # the shipped copy itself
    print(json.dumps({k: arms[0][k] for k in ("share", "identifier_prior_mean")}), flush=True)
    for share in args.shares:
        started = time.time()
        model = tiny_sd("shipped")
        losses = continue_training(model, latents, ids, share, args.steps, args.lr, progress)
        arms.append({"share": share, "loss_last_100": round(sum(losses[-100:]) / len(losses[-100:]), 4),
                     "seconds": round(time.time() - started, 1), **judged(model, judges, args.n)})
        print(json.dumps({k: arms[-1][k] for k in ("share", "identifier_prior_mean", "plain_drawing")}), flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "steps": args.steps, "lr": args.lr, "n": args.n,
              "examples": len(examples), "what": "shipped tiny-sd trained on with a share of captions given one "
              "unused token; world-classifier category accuracy under identifiers (share null: no training)",
              "arms": arms}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
