"""Stable Diffusion v1-4's exact shapes, randomly initialised: one LoRA step, one MIMA outer step, one sampling step.

No weights are downloaded: ``immunobench.architecture.sd_v1_4_components`` builds SD v1-4's UNet, VAE and text
encoder at their exact configs with random weights, saves them once in the diffusers layout and every op loads
them through ``load_backbone("sd-v1-4", folder=...)`` in a fresh process (its peak memory is its own). Cost does
not depend on the weights' values, so the figures are SD v1-4's; the steps work on random latents directly
(N(0, 1), no VAE in the timed steps) at a latent size given on the command line.

Ops, each the loop body of the project's own code with its SD (paper) config:
- ``lora_b1``, ``lora_b4``: one step of ``attacks/lora.py`` (``finetune.add_lora`` rank 4 on to_q/k/v/out of every
  attention, ``instance_objective``, AdamW, clip) at batch 1 and at the attack's batch (4, MIMA §5.1);
- ``mima_n2``, ``mima_n3``: one outer step of ``defenses/mima.py`` (``bilevel.merged_objective``: N unrolled
  inner steps with prior preservation, the differentiable merge, the outer loss of all N; AdamW on attn2), on
  relearn-style's groups 2c-1 and 3c-1, one image per concept (as MIMA's cost figure);
- ``sample_cfg``: one DDIM step of ``diffusion.partial_sample`` with classifier-free guidance (UNet batch 2).

Per op and size: wall seconds (median of ``--repeats`` after a warm-up), peak memory over the RSS (or CUDA
memory) held before the first step, FLOPs counted by ``torch.utils.flop_counter`` on the warm-up step, and
achieved FLOP/s. Then each op is rebuilt on the meta device (shapes only) at every size and at 64×64 latents
(512 px): FLOPs and the peak of live tensor bytes a step creates, counted by torch without running it; the
small sizes check the meta counts against the measured ones. The projection to 512 px on a GPU is computed
from those counts and written beside MIMA's own cost figure. With CUDA the same script runs at 512 px in
fp16/bf16 (``--device cuda --dtype float16 --latents 64``) and reports achieved FLOP/s directly.

    .venv/bin/python benchmarks/bench_sd_shapes.py [--latents 8 16] [--repeats 3] [--threads 2]
    .venv/bin/python benchmarks/bench_sd_shapes.py --device cuda --dtype bfloat16 --latents 64
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import RESULTS, host, stage_flops  # noqa: E402

OPS = ("lora_b1", "lora_b4", "mima_n2", "mima_n3", "sample_cfg")
# counted on the meta device only, beside the op whose process builds the merge plan they need
META_ONLY = {"mima_n3": ("mima_n3_first_order",)}
TASK = "relearn-style"
GROUPS = {2: "2c-1", 3: "3c-1"}  # MIMA Table 6: Monet+Fagan; McKernan+Fagan+Picasso
PROJECT_LATENT = 64  # SD v1-4 at 512 px: 64×64 latents
SAMPLE_STEPS = 50  # SD's default DDIM steps (sd-v1-4 spec); one of them is timed
# NVIDIA A100 datasheet: 312 TFLOP/s dense FP16/BF16 tensor core, 156 TF32, 19.5 FP32.
A100_PEAK = {"float16": 312e12, "bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12}
MIMA_PAPER = {
    "claim": "one A100; 100 steps, each with three concepts and one image per concept; memory stabilised "
             "around 2,000 MiB, each iteration approximately 2.60 s",
    "source": "MIMA (Zheng & Yeh, AAAI 2025), appendix 'Computational efficiency analysis' and its Fig. 16 "
              "(/work/shared/seeds/000_659389af2af07161.txt, lines 499 and 521)",
    "seconds_per_step": 2.60, "steady_memory_mib": 2000,
}


# --- the ops: each the loop body of the project's code, on a real or a meta-device model ----------------------

@dataclass
class Prepared:
    step: Callable[[], object]
    trainable: int  # parameters the step updates
    info: dict


def prepare(op: str, model, size: int, plan=None) -> Prepared:
    """``op`` on ``model`` (a Backbone) at ``size``×``size`` latents. ``plan`` reuses a MIMA merge plan (the
    meta-device model cannot factor one; its shapes come from the tokenizer, not the weights)."""
    if op.startswith("lora"):
        return _lora(model, size, int(op.split("_b")[1]))
    if op.startswith("mima"):
        return _mima(model, size, int(op.split("_n")[1][0]), plan, first_order=op.endswith("first_order"))
    if op == "sample_cfg":
        return _sample(model, size)
    raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}")


def _latents(model, n: int, size: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, model.unet.config.in_channels, size, size, generator=torch.Generator().manual_seed(seed))
    return z.to(model.device, model.unet.dtype)


def _lora(model, size: int, batch: int) -> Prepared:
    """``attacks/lora.py``'s update (``finetune.train``'s loop body without its finite-loss check) on
    relearn-style 3c-1's three targets, four images each; the plugin's deep copy of the UNet is left out."""
    from immunobench.attacks.lora import LoRA
    from immunobench.cards import get_card
    from immunobench.finetune import TrainingSet, add_lora, instance_objective
    from immunobench.plugins import configure

    cfg = configure(LoRA, "sd-v1-4", "relearn", {"batch_size": batch})
    group = get_card(TASK).group(GROUPS[3])
    unet = model.unet
    trainable = add_lora(unet, cfg.rank, cfg.target_modules, cfg.seed)
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    prompts = [group.prompt(c) for c in group.targets for _ in range(4)]
    train_set = TrainingSet(_latents(model, len(prompts), size, 0), prompts, [p for p in prompts])
    loss_at = instance_objective(model, group, unet, train_set, batch_size=cfg.batch_size, seed=cfg.seed)
    unet.train()

    def step():
        loss = loss_at(0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        opt.step()

    return Prepared(step, sum(p.numel() for p in trainable),
                    {"rank": cfg.rank, "batch_size": cfg.batch_size, "targets": list(cfg.target_modules)})


def _mima(model, size: int, n: int, plan=None, first_order: bool = False) -> Prepared:
    """``defenses/mima.py``'s outer step (``immunize``'s loop body without its finite-loss check, history and
    snapshot) with MIMA's SD config: one defense image and one prior image per concept, drawn as immunize
    draws them; the plugin's deep copy of the UNet is left out. ``first_order``: the released code's gradient
    (``merged_objective(stop_gradient=True)``: no graph through the inner steps and the merge, fused attention)."""
    from immunobench.bilevel import draw_batch, merge_plan, merged_objective
    from immunobench.captions import all_card_names, generic_captions, scored_names
    from immunobench.cards import get_card
    from immunobench.data import ConceptImages, defense_view
    from immunobench.defenses.mima import MIMA
    from immunobench.diffusion import encode_prompts, second_order_attention, select_parameters
    from immunobench.plugins import configure

    cfg = configure(MIMA, "sd-v1-4", "relearn", None)
    card = get_card(TASK)
    group = card.group(GROUPS[n])
    captions, source = generic_captions(model.spec, all_card_names() | scored_names([card]))
    regularization = ConceptImages(torch.zeros(1, 3, 8, 8), [card.regularization.prompt])  # prompts only used
    view = defense_view(group, regularization=regularization, captions=tuple(captions), captions_source=source)
    concepts = list(view.targets)
    unet = model.unet.requires_grad_(False)
    theta = {k: p.requires_grad_(True) for k, p in select_parameters(unet, cfg.upper_params).items()}
    lower = list(select_parameters(unet, cfg.lower_params))
    kv = [k for k in lower if ".attn2.to_k." in k or ".attn2.to_v." in k]
    rows = {}
    with torch.no_grad():
        if plan is None:
            plan, rows = merge_plan(model, concepts, view, cfg)
        inst = {c: (_latents(model, 1, size, i), encode_prompts(model, [view.prompts[c]]))
                for i, c in enumerate(concepts)}
        prior = (_latents(model, 1, size, 99), encode_prompts(model, [view.regularization_prompt]))
    opt = torch.optim.AdamW(theta.values(), lr=cfg.outer_lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    unet.train()

    def draw(latents, cond):
        return draw_batch(latents, cond, model.scheduler, g)

    def step():
        with contextlib.nullcontext() if first_order else second_order_attention():
            batches = [(draw(*inst[c]), draw(*prior), draw(*inst[c]), draw(*prior)) for c in concepts]
            outer = merged_objective(unet, model.scheduler, theta, lower, kv, plan, batches, cfg, first_order)
            opt.zero_grad(set_to_none=True)
            outer.backward()
            torch.nn.utils.clip_grad_norm_(list(theta.values()), cfg.max_grad_norm)
            opt.step()

    return Prepared(step, sum(p.numel() for p in theta.values()),
                    {"group": f"{TASK} {group.name}", "concepts": concepts, "second_order": not first_order,
                     "prior_weight": cfg.prior_weight, "upper_params": cfg.upper_params,
                     "lower_params": cfg.lower_params, "c_reg_captions": cfg.regularization_captions,
                     "merge_plan": plan, **rows})


def _sample(model, size: int) -> Prepared:
    """One step of ``diffusion.partial_sample``'s DDIM loop (η = 0, guidance): the unconditional and the
    conditional half in one UNet call of batch 2; prompt encoding (once per image) left out."""
    from diffusers import DDIMScheduler

    from immunobench.cards import get_card
    from immunobench.diffusion import call_with, encode_prompts

    group = get_card(TASK).group(GROUPS[3])
    scheduler = DDIMScheduler.from_config(dict(model.scheduler.config), set_alpha_to_one=False)
    scheduler.set_timesteps(SAMPLE_STEPS)
    guidance = model.spec.guidance_scale
    latents = _latents(model, 1, size, 0) * scheduler.init_noise_sigma
    with torch.no_grad():
        cond = torch.cat([encode_prompts(model, [""]), encode_prompts(model, [group.prompt(group.targets[0])])])
    t = scheduler.timesteps[0]
    model.unet.eval()

    @torch.no_grad()
    def step():
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps_uncond, eps_cond = call_with(model.unet, None, model_in, t, encoder_hidden_states=cond).sample.chunk(2)
        eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        return scheduler.step(eps, t, latents).prev_sample

    return Prepared(step, 0, {"guidance_scale": guidance, "ddim_steps": SAMPLE_STEPS, "images": 1})


# --- counting on the meta device ---------------------------------------------------------------------------

class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensors created inside the context that are alive at once (each storage counted once,
    freed when its last reference goes): activations kept for backward, gradients, new optimizer state. Works
    on the meta device, so a step's memory at any size is counted without running it."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # a view or an in-place result shares an input's storage: counted already, or held before the step
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if id(storage) not in self.live and id(storage) not in inputs:
                    self.live[id(storage)] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._free, id(storage))
        return out


class FusedAttention(TorchFunctionMode):
    """On the meta device SDPA falls back to its math kernel, which materialises every attention matrix; the CPU
    and GPU run a fused kernel (flash) unless a context asks for math (MIMA's ``second_order_attention``).
    Route unmasked SDPA to the CPU flash kernel (it has meta kernels) so meta counts follow the real choice."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is F.scaled_dot_product_attention and torch.backends.cuda.flash_sdp_enabled()
                and kwargs.get("attn_mask") is None and len(args) == 3):
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                *args, kwargs.get("dropout_p", 0.0), kwargs.get("is_causal", False), scale=kwargs.get("scale"))[0]
        return func(*args, **kwargs)


def meta_backbone(spec):
    """SD v1-4's exact modules on the meta device (shapes only), as a Backbone with ``spec``."""
    from immunobench.architecture import sd_v1_4_components
    from immunobench.backbones import Backbone

    model = Backbone.from_components(sd_v1_4_components(device="meta"), name="sd-v1-4-meta")
    model.spec = spec
    for module in (model.unet, model.vae, model.text_encoder):
        module.requires_grad_(False).eval()
    return model


def count_on_meta(op: str, spec, sizes: list[int], plan=None, model: Callable | None = None) -> dict:
    """Per latent size: FLOPs of one step (``_bench.stage_flops``) and its peak live bytes (``LiveBytes``), on a
    fresh meta-device model (``model()``; default SD v1-4's) after one uncounted step, so the optimizer's state
    exists as in the timed steps."""
    out = {}
    for size in sizes:
        backbone = model() if model is not None else meta_backbone(spec)
        moved = None if plan is None else _plan_to(plan, backbone.device, backbone.unet.dtype)
        prepared = prepare(op, backbone, size, moved)
        with FusedAttention():
            prepared.step()
            with LiveBytes() as live:
                flops = stage_flops(prepared.step)
        out[str(size)] = {"flops": flops, "live_bytes_peak": live.peak}
    return out


def _plan_to(plan, device, dtype):
    """A merge plan on another device and in another float dtype (as ``bilevel.merge_plan`` casts it)."""
    return replace(plan, P=plan.P.to(device, dtype), C=plan.C.to(device, dtype),
                   C_unique=plan.C_unique.to(device, dtype), group=plan.group.to(device),
                   counts=plan.counts.to(device, dtype))


# --- one op at one size, in its own process ------------------------------------------------------------------

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _child(args) -> dict:
    from immunobench.backbones import load_backbone
    from immunobench.runner import _PeakMemory

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    model = load_backbone("sd-v1-4", folder=args.child_folder, device=args.device, dtype=dtype)
    with torch.no_grad():  # the loader maps the safetensors files lazily: bring every weight into memory first
        for module in (model.unet, model.text_encoder, model.vae):
            for p in module.parameters():
                p.data = p.data.clone()
    load_seconds = time.perf_counter() - started
    size = args.latents[0]
    started = time.perf_counter()
    prepared = prepare(args.op, model, size)
    setup_seconds = time.perf_counter() - started  # MIMA: encoding C_reg's 201 prompts for the merge plan
    plan = prepared.info.pop("merge_plan", None)
    _sync(args.device)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
    with _PeakMemory(args.device) as usage:
        before = usage.peak
        flops = stage_flops(prepared.step)  # the warm-up step, counted
        times = []
        for _ in range(args.repeats):
            _sync(args.device)
            t = time.perf_counter()
            prepared.step()
            _sync(args.device)
            times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    row = {"op": args.op, "latent": size, "pixels": size * 8, "load_average": os.getloadavg()[0],
           "seconds_median": round(seconds, 4),
           "seconds": [round(t, 4) for t in times], "flops": flops, "gflops_per_s": round(flops / seconds / 1e9, 2),
           "rss_before_mb": round(before / 2**20, 1), "peak_rss_increase_mb": round((usage.peak - before) / 2**20, 1),
           "load_seconds": round(load_seconds, 1), "setup_seconds": round(setup_seconds, 1),
           "trainable_params": prepared.trainable, "info": prepared.info}
    if cuda:
        row.update(cuda_held_mb=round(held / 2**20, 1), cuda_peak_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                   cuda_peak_increase_mb=round((torch.cuda.max_memory_allocated() - held) / 2**20, 1))
    if args.count:
        spec = model.spec
        del prepared, model  # the meta counts need no real weights
        row["meta"] = count_on_meta(args.op, spec, args.count, plan)
        row["meta_only"] = {op: {"meta": count_on_meta(op, spec, [PROJECT_LATENT], plan),
                                 "trainable_params": row["trainable_params"]} for op in META_ONLY.get(args.op, ())}
    return row


def _spawn(args, folder: Path, op: str, size: int, repeats: int, count: list[int]) -> dict:
    cmd = [sys.executable, __file__, "--child-folder", str(folder), "--op", op, "--latents", str(size),
           "--device", args.device, "--dtype", args.dtype, "--repeats", str(repeats),
           "--threads", str(args.threads), *(["--count", *map(str, count)] if count else [])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{op} at {size}×{size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the projection -----------------------------------------------------------------------------------------

def parameter_counts() -> dict:
    from immunobench.architecture import sd_v1_4_components

    parts = sd_v1_4_components(device="meta")
    return {k: sum(p.numel() for p in parts[k].parameters()) for k in ("unet", "text_encoder", "vae")}


def projection(ops: dict, params: dict, fraction: float) -> dict:
    """Seconds and memory of each op at 512 px on an A100, from the meta counts, with the arithmetic."""
    out = {"assumption": f"achieved = {fraction:.0%} of the A100's dense peak (NVIDIA A100 datasheet: 312 TFLOP/s "
                         "FP16/BF16 tensor core, 156 TF32, 19.5 FP32); the fraction is assumed, not measured "
                         "(`--device cuda` measures it)",
           "fraction_of_peak": fraction, "ops": {}}
    unet = params["unet"]
    for op, rec in ops.items():
        flops, live = rec["meta_512"]["flops"], rec["meta_512"]["live_bytes_peak"]
        row = {"flops": flops}
        for precision in ("float16", "tf32", "float32"):
            s = flops / (fraction * A100_PEAK[precision])
            row[f"seconds_{precision}"] = round(s, 3)
            row[f"arithmetic_{precision}"] = (f"{flops / 1e12:.2f} TFLOP / ({fraction:g} × "
                                              f"{A100_PEAK[precision] / 1e12:g} TFLOP/s) = {s:.3f} s")
        trained = rec["trainable_params"]
        # fp32, as the runner runs today: weights, AdamW's two moments of the trained tensors, the step's live tensors
        fp32 = 4 * unet + 8 * trained + live
        row["memory_fp32_gb"] = round(fp32 / 1e9, 2)
        row["memory_fp32_arithmetic"] = (f"UNet {unet:,} × 4 B = {4 * unet / 1e9:.2f} GB + AdamW moments {trained:,} × "
                                         f"8 B = {8 * trained / 1e9:.2f} GB + live tensors of a step (meta count: "
                                         f"activations, gradients) {live / 1e9:.2f} GB = {fp32 / 1e9:.2f} GB")
        # mixed precision as diffusers trains: fp16 weights, the trained tensors as fp32 masters with AdamW moments
        mixed = 2 * unet + 12 * trained + live / 2
        row["memory_mixed_gb"] = round(mixed / 1e9, 2)
        row["memory_mixed_arithmetic"] = (f"UNet {unet:,} × 2 B = {2 * unet / 1e9:.2f} GB + {trained:,} × 12 B (fp32 "
                                          f"master, 2 moments) = {12 * trained / 1e9:.2f} GB + live tensors at half "
                                          f"width {live / 2e9:.2f} GB = {mixed / 1e9:.2f} GB")
        out["ops"][op] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="weights and activations (no fp32 master copy: for timing and memory)")
    parser.add_argument("--latents", nargs="+", type=int, help="latent sizes of the LoRA and sampling steps "
                        "(multiples of 8; pixels = 8×); default 8 16 on the CPU, 64 (512 px) on CUDA")
    parser.add_argument("--mima-latents", nargs="+", type=int, help="latent sizes of the MIMA steps; default 8 on "
                        "the CPU (a second-order step of the full UNet takes about a minute there), 64 on CUDA")
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up (the median is kept)")
    parser.add_argument("--mima-repeats", type=int, default=2, help="timed MIMA steps after one warm-up")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="intra-op threads")
    parser.add_argument("--fraction", type=float, default=0.4, help="assumed achieved fraction of the A100 peak")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_sd_shapes.json")
    parser.add_argument("--child-folder", help=argparse.SUPPRESS)
    parser.add_argument("--op", help=argparse.SUPPRESS)
    parser.add_argument("--count", nargs="*", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child_folder:
        print(json.dumps(_child(args)))
        return
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; run on the CPU (the default) or on a machine with one")
    sizes = args.latents or ([PROJECT_LATENT] if cuda else [8, 16])
    mima_sizes = args.mima_latents or ([PROJECT_LATENT] if cuda else [8])
    if any(s % 8 for s in sizes + mima_sizes):
        raise SystemExit(f"latent sizes must be multiples of 8 (the UNet halves them three times), got "
                         f"{sizes + mima_sizes}")

    from immunobench.architecture import save_components, sd_v1_4_components
    from immunobench.runner import code_version, package_versions

    torch.set_num_threads(args.threads)
    started, load_before = time.time(), os.getloadavg()
    params = parameter_counts()
    print(f"SD v1-4 shapes: UNet {params['unet']:,}, text encoder {params['text_encoder']:,}, VAE {params['vae']:,} "
          "parameters (random init)", flush=True)
    ops = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        save_components(sd_v1_4_components(seed=0), tmp)
        print(f"built and saved the random SD v1-4 in {time.time() - t:.0f} s", flush=True)
        for op in args.ops:
            mima = op.startswith("mima")
            op_sizes, repeats = (mima_sizes, args.mima_repeats) if mima else (sizes, args.repeats)
            rec = {"by_latent": {}}
            for i, size in enumerate(op_sizes):
                count = sorted(set(op_sizes) | {PROJECT_LATENT}) if i == 0 else []
                row = _spawn(args, Path(tmp), op, size, repeats, count)
                rec["trainable_params"], rec["config"] = row.pop("trainable_params"), row.pop("info")
                if count:
                    rec["meta_count"] = row.pop("meta")
                    for other, got in row.pop("meta_only").items():
                        ops[other] = {"meta_count": got["meta"], "trainable_params": got["trainable_params"],
                                      "config": {**rec["config"], "second_order": False}, "by_latent": {}}
                rec["by_latent"][str(size)] = row
                mem = (f"CUDA +{row['cuda_peak_increase_mb']} MB" if "cuda_peak_mb" in row
                       else f"RSS +{row['peak_rss_increase_mb']} MB over {row['rss_before_mb']} MB")
                print(f"{op} {size}×{size} latents ({size * 8} px): {row['seconds_median']:.3f} s "
                      f"(median of {repeats}), {row['flops'] / 1e9:.1f} GFLOP, {row['gflops_per_s']} GFLOP/s, "
                      f"{mem}", flush=True)
            for size, row in rec["by_latent"].items():  # the meta count checks the measured one
                row["meta_flops_equal_measured"] = rec["meta_count"][size]["flops"] == row["flops"]
            ops[op] = {**rec, **ops.get(op, {})}
    for rec in ops.values():
        rec["meta_512"] = rec["meta_count"][str(PROJECT_LATENT)]
    result = {
        "what": __doc__.split("\n\n")[0],
        "date": time.strftime("%Y-%m-%d"),
        # other work on the machine slows every figure: the 1-minute load average before and after the run
        "host": {**host(), "threads": args.threads, "load_average_before_after": [load_before[0], os.getloadavg()[0]]},
        "device": torch.cuda.get_device_name(args.device) if cuda else args.device,
        "dtype": args.dtype, "code_version": code_version(), "packages": package_versions(),
        "model": {"configs": "SD v1-4's exact UNet, VAE and text-encoder configs (immunobench.architecture.SD_V1_4 via SDArchitecture.sd_v1_4(), "
                             "from the model's config.json files)", "weights": "random init (seed 0); no download",
                  "inputs": "random N(0, 1) latents; the VAE is not in the timed steps", "parameters": params},
        "ops": ops,
        "counting": "flops: torch.utils.flop_counter (matmuls, convolutions, attention; elementwise ops and the "
                    "optimizer uncounted) on the warm-up step; meta_count: the same step on the meta device "
                    "(flops, and live_bytes_peak: the peak bytes of tensors one steady step creates, fp32: "
                    "activations kept for backward, gradients; weights and optimizer state excluded)",
        "mima_paper": MIMA_PAPER,
        "projection_512px_a100": projection(ops, params, args.fraction),
        "wall_seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
