"""The ``immunobench`` command line. Bad input prints one line and exits with code 2 before any work
starts; a grid in which some cells failed writes what it could and exits with code 3."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Sequence

from . import __version__
from .errors import UserError

KINDS = ("defenses", "attacks", "metrics", "tasks", "backbones")
EXIT_BAD_INPUT = 2
EXIT_CELLS_FAILED = 3
EXIT_NOT_REPRODUCED = 4  # a bundle whose re-run cells differ from its rows beyond the stated tolerance


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the fix is in `--help`) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _common() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--plugin", action="append", default=[], metavar="FILE",
                        help="a Python file that registers defenses/attacks/metrics (repeatable)")
    common.add_argument("--include-path", action="append", default=[], metavar="DIR",
                        help="a folder of extra task cards; later folders override earlier ones (repeatable)")
    common.add_argument("--allow-pickle", action="store_true",
                        help="load pickled (.bin/.ckpt) model weights; pickles can run code, so only trusted ones")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="immunobench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"immunobench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", parents=[common], help="list registered plugins or task cards")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'mima*'")

    world = sub.add_parser("world", help="the embedded concept world: train tiny-sd and its judges, check the premise")
    world_sub = world.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND", parser_class=_Parser)
    p = world_sub.add_parser("train", parents=[common], help="train tiny-sd (resumable) on the rendered world")
    p.add_argument("--out", help="model folder (default: the package's embedded weights/tiny-sd)")
    p.add_argument("--work", help="checkpoint folder; a rerun resumes from it (default: ~/.cache/immunobench/world-train)")
    p.add_argument("--unet-steps", type=int)
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--images-per-concept", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--unattributed-art", type=float, help="share of artworks captioned without their artist (default 0.25)")
    p.add_argument("--anonymous-art", type=int, help="artworks by unnamed painters, captioned generically (default 0)")
    p.add_argument("--rare-token-captions", type=float,
                   help="share of captions given one random token no world caption uses (default 0)")
    p.add_argument("--vae-from", metavar="WORK",
                   help="start from another run's finished VAE stage (its --work folder); refused unless "
                        "that run's VAE settings match this one's, e.g. for caption-only variants")
    p.add_argument("--vae-crop", type=int, help="train the VAE on random square crops of this side (default 32; 0: whole images)")
    p.add_argument("--attention-heads", type=int, nargs="+", metavar="N",
                   help="UNet attention heads per level, from the top (default 2 4; diffusers' attention_head_dim)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")

    p = world_sub.add_parser("train-judges", parents=[common],
                             help="train the offline judges (classifier, CLIP, DINO, LPIPS roles) on the world")
    p.add_argument("--out", help="folder for the judge weights (default: the package's embedded weights/judges)")
    p.add_argument("--seed", type=int, default=0)
    p = world_sub.add_parser("check", parents=[common],
                             help="measure the papers' premise on the shipped (or --weights) tiny-sd; writes a run folder "
                                  "with world_report.md/.json and the image grids")
    p.add_argument("--out", default="runs", help="folder of run folders (default: runs/)")
    p.add_argument("--name", default="", help="run folder name (default: world-check-<date>-<time>)")
    p.add_argument("--n-eval", type=int, default=10, help="generations per concept and measurement")
    p.add_argument("--weights", help="tiny-sd weights to check instead of the shipped ones (a `world train --out` folder)")
    p.add_argument("--lora-seeds", type=int, default=None,
                   help="LoRA seeds averaged for the re-learning and personalization targets (default 1; 3 or more to judge a retrained copy)")

    p = sub.add_parser("run", parents=[common], help="immunize, attack and measure a grid; writes a leaderboard")
    p.add_argument("--task", required=True, help="a task card name (see `immunobench list tasks`) or a card file")
    p.add_argument("--defense", default="mima", type=_csv,
                   help="comma-separated defenses, or `all` (every registered one); the no-defense baseline `none` "
                        "is always included (default: mima)")
    p.add_argument("--attack", default=None, type=_csv, help="comma-separated attacks (default: the card's)")
    p.add_argument("--groups", nargs="+", default=[], help="concept groups (default: all of the card's)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    p.add_argument("--model", default="tiny-sd", help="backbone name, hub id or local folder (default: tiny-sd)")
    p.add_argument("--judges", default="", metavar="FAMILY",
                   help="the judges that score the images: real (CLIP, DINO, LPIPS, ResNet50 from the local cache) or "
                        "world (the embedded world's, offline) (default: the backbone's; tiny-sd: world, others: real)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    p.add_argument("--out", default="runs", help="folder of run folders (default: runs/)")
    p.add_argument("--store", default=None, help="artifact store shared by runs: a folder or a URL, e.g. "
                   "s3://bucket/store (docs/distributed.md; default: ~/.cache/immunobench/store)")
    p.add_argument("--name", default="", help="run folder name inside --out (default: <task>-<date>-<time>)")
    p.add_argument("--eval-images", type=int, default=0, help="generations per concept and checkpoint (default: the card's)")
    p.add_argument("--checkpoints", nargs="+", type=int, default=[],
                   help="attack steps to measure, strictly increasing and including the report step, as in a card "
                        "(default: the card's)")
    p.add_argument("--report-step", type=int, default=None,
                   help="attack step of the tables, one of the checkpoints (default: the card's)")
    p.add_argument("--sample-steps", type=int, default=0, help="DDIM steps per generation (default: the backbone's)")
    p.add_argument("--set", action="append", default=[], metavar="PLUGIN.FIELD=VALUE",
                   help="override a plugin config field, e.g. mima.steps=100 (repeatable; see `immunobench show defense mima`)")
    p.add_argument("--attack-sweep", nargs="+", default=[], metavar="ATTACK.FIELD=V1,V2",
                   help="sweep attack config fields (or the budget, ATTACK.report_step, a checkpoint), e.g. "
                        "lora.lr=1e-4,1e-3 lora.rank=4,16: each attack runs the product of the values plus its "
                        "default; the leaderboard adds the worst case over the sweep within the card's epsilon")
    p.add_argument("--jobs", "--workers", dest="workers", type=int, default=0, metavar="N",
                   help="local executor: processes computing the grid's stages, one thread each (default: one per "
                        "core on CPU, 1 on a GPU); ray: the CPUs of a local Ray instance")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where stages run: worker processes on this machine (default) or Ray tasks, each with its "
                        "resource needs (one CPU; one GPU on CUDA), retried when a worker dies")
    p.add_argument("--address", default="",
                   help="--executor ray: the cluster to join (auto, ray://head:10001; default: start a local Ray "
                        "instance); its nodes need this immunobench and a store they all reach (s3://, gs://, a shared folder)")
    p.add_argument("--snapshot-every", type=float, default=300.0, metavar="SECONDS",
                   help="seconds between snapshots of an immunization's training loop; a rerun of a killed run "
                        "resumes it from the last one (default 300; 0: every step)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("runs", help="list finished runs")
    p.add_argument("--out", default="runs", help="folder of run folders (default: runs/)")
    p = sub.add_parser("report", help="re-render a run's tables and plots from its results")
    p.add_argument("run", help="a run folder, or a run name under --out")
    p.add_argument("--out", default="runs")

    p = sub.add_parser("new", help="write a documented plugin file to start a new defense from")
    p.add_argument("kind", choices=("defense",))
    p.add_argument("name", help="the name it registers, e.g. mydef (the file: mydef.py)")
    p.add_argument("--out", default=".", help="folder to write it in (default: the current one)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p = sub.add_parser("check-plugin", help="say, one line each, what would stop a plugin file from running")
    p.add_argument("file", help="a plugin file, e.g. one written by `immunobench new defense`")

    p = sub.add_parser("bundle", help="pack a finished run into a submission bundle (results, manifest, plugin sources, hashes)")
    p.add_argument("run", help="a run folder, or a run name under --out")
    p.add_argument("--out", default="runs", help="folder of run folders (default: runs/)")
    p.add_argument("--to", help="bundle file to write (default: <run folder>.bundle.zip)")
    p = sub.add_parser("verify", help="check a submission bundle's hashes, schema and plugin sources")
    p.add_argument("bundle", help="a bundle zip (or a folder it was unpacked into)")

    p = sub.add_parser("publish", help="publish a verified bundle's rows, bundle and figures to a Hugging Face dataset "
                                       "(and Space) or to a folder")
    p.add_argument("run", help="a finished run folder, a run name under --out, or a bundle zip")
    p.add_argument("--out", default="runs", help="folder of run folders (default: runs/)")
    p.add_argument("--repo", metavar="OWNER/NAME", help="the results dataset repo on the hub (created if missing)")
    p.add_argument("--space", metavar="OWNER/NAME", help="also create this leaderboard Space (first use), reading --repo")
    p.add_argument("--to", metavar="DIR", help="write the same layout into this folder (merged with what is there)")
    p.add_argument("--dry-run", action="store_true", help="print what would be written or committed; write nothing")
    p.add_argument("--endpoint", metavar="URL", help="the hub's address (default: HF_ENDPOINT or huggingface.co)")

    p = sub.add_parser("reproduce", help="re-run random cells of a bundle in a fresh store and compare them with its rows")
    p.add_argument("bundle", help="a bundle zip written by `immunobench bundle`")
    p.add_argument("--cells", type=int, default=2, help="how many cells to re-run (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choice of cells (default 0)")
    p.add_argument("--workers", type=int, default=1, help="processes per re-run (default 1)")

    p = sub.add_parser("leaderboard", help="the leaderboard Space app, run locally")
    board = p.add_subparsers(dest="leaderboard_command", required=True, metavar="LEADERBOARD_COMMAND", parser_class=_Parser)
    p = board.add_parser("serve", help="serve the leaderboard app on a published results folder")
    p.add_argument("--from", dest="root", required=True, metavar="DIR",
                   help="a folder written by `immunobench publish --to DIR` (index.json, rows/, figures/)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")

    p = sub.add_parser("show", parents=[common], help="show one task card or plugin")
    p.add_argument("kind", choices=("task", "defense", "attack", "metric", "backbone"))
    p.add_argument("name", help="a registered name; a task may be a card file, a backbone a hub id or folder")
    p.add_argument("--model", help="also print each option's value in force on this backbone (default with --task: tiny-sd)")
    p.add_argument("--task", help="also print each option's value in force for this task card's kind")
    return parser


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected one or more comma-separated names")
    return items


def _load_plugins(args: argparse.Namespace) -> None:
    from .plugins import discover, load_plugin_file

    discover()
    for path in getattr(args, "plugin", []):
        load_plugin_file(path)


def _parse_overrides(items: list[str]) -> dict:
    """``mima.steps=100`` → {"mima": {"steps": "100"}}; the plugin's config coerces each value by its
    field's type (``immunobench.config``), so ``mima.steps=abc`` fails there, naming what is allowed."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        plugin, dot, name = key.partition(".")
        if not sep or not dot or not plugin or not name:
            raise UserError(f"--set {item!r}: expected PLUGIN.FIELD=VALUE, e.g. mima.steps=100")
        out.setdefault(plugin, {})[name] = value
    return out


def _parse_sweep(items: list[str]) -> dict:
    """``lora.lr=1e-4,1e-3`` → {"lora": {"lr": ("1e-4", "1e-3")}}; the runner validates each value as
    ``--set`` would. Commas inside brackets belong to one value (``[a, b],[c]``: two tuples)."""
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        attack, dot, name = key.partition(".")
        values = _split_values(text)
        if not sep or not dot or not attack or not name or not values or any(not v for v in values):
            raise UserError(f"--attack-sweep {item!r}: expected ATTACK.FIELD=VALUE,VALUE,…, e.g. lora.lr=1e-4,1e-3")
        if name in out.get(attack, {}):
            raise UserError(f"--attack-sweep {item!r}: {attack}.{name} is swept twice; give its values once")
        out.setdefault(attack, {})[name] = tuple(dict.fromkeys(values))
    return out


def _split_values(text: str) -> list[str]:
    values, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    return values + [current.strip()] if text else []


def cmd_run(args: argparse.Namespace) -> int:
    from .progress import Progress
    from .runner import RunConfig, Runner
    from .store import DEFAULT_STORE

    if args.eval_images < 0:
        raise UserError(f"--eval-images must be >= 1, got {args.eval_images}")
    if args.sample_steps < 0 or (args.report_step is not None and args.report_step < 0):
        raise UserError("--sample-steps and --report-step must be >= 0")
    if any(c < 0 for c in args.checkpoints):
        raise UserError("--checkpoints must be non-negative attack steps")
    if args.snapshot_every < 0:
        raise UserError(f"--snapshot-every must be >= 0 seconds, got {args.snapshot_every}")
    if args.workers < 0:
        raise UserError(f"--jobs/--workers must be >= 1 (or 0 for one per core), got {args.workers}")
    if args.address and args.executor != "ray":
        raise UserError("--address names a Ray cluster: add --executor ray")
    _check_device(args.device)
    cfg = RunConfig(task=args.task, defenses=tuple(args.defense), attacks=tuple(args.attack or ()),
                    groups=tuple(args.groups), seeds=tuple(dict.fromkeys(args.seeds)), model=args.model,
                    judges=args.judges, device=args.device, out=args.out, store=args.store or str(DEFAULT_STORE),
                    name=args.name, eval_images=args.eval_images, checkpoints=tuple(args.checkpoints),
                    report_step=args.report_step, sample_steps=args.sample_steps,
                    overrides=_parse_overrides(args.set), include_paths=tuple(args.include_path),
                    allow_pickle=args.allow_pickle, workers=args.workers, executor=args.executor,
                    address=args.address, attack_sweep=_parse_sweep(args.attack_sweep),
                    snapshot_every_s=args.snapshot_every)
    runner = Runner(cfg, Progress(not args.quiet))
    run_dir = runner.run()
    print()
    print((run_dir / "leaderboard.md").read_text())
    t = runner.stats
    print(f"run folder: {run_dir}  (manifest.json, results.parquet, leaderboard.md/.csv, plots/)")
    computed = ", ".join(f"{k} {v['count']}× {v['seconds']:.0f} s" for k, v in t["computed"].items()) or "nothing"
    cached = ", ".join(f"{k} {v}×" for k, v in t["cached"].items()) or "nothing"
    print(f"computed: {computed}; reused from the store: {cached}")
    if runner.failures:
        print(runner.failure_summary())  # the last line: how many cells failed and why
        return EXIT_CELLS_FAILED
    return 0


def _run_folder(args: argparse.Namespace, writable: bool = True):
    """The finished run folder ``report`` rewrites (``writable``) or ``publish`` reads, its manifest and results
    checked readable."""
    from pathlib import Path

    import pandas as pd

    from .runner import read_manifest
    from .store import check_writable

    folder = Path(args.run)
    if not (folder / "manifest.json").exists() and (Path(args.out) / args.run).is_dir():
        folder = Path(args.out) / args.run
    if not folder.is_dir() or not any((folder / f).exists() for f in ("manifest.json", "results.parquet")):
        raise UserError(f"{args.run}: not a run folder (no manifest.json or results.parquet, also not under "
                        f"--out {args.out}); list runs with `immunobench runs --out {args.out}`")
    read_manifest(folder)
    try:
        pd.read_parquet(folder / "results.parquet")
    except Exception as exc:  # noqa: BLE001 — missing, truncated or not parquet: all the same to the user
        raise UserError(f"{folder}/results.parquet: unreadable ({type(exc).__name__}); "
                        "rerun the run to rewrite it (the store makes that quick)") from None
    if writable:
        check_writable(folder, "report")
    return folder


def cmd_runs(args: argparse.Namespace) -> None:
    from .runner import list_runs

    rows = [(r["run"], r["task"], ",".join(r["defenses"]), " ".join(r["groups"]), " ".join(map(str, r["seeds"])),
             r["model"], f"{r['seconds']:.0f}", r["failures"], r["date"]) for r in list_runs(args.out)]
    _table(("run", "task", "defenses", "groups", "seeds", "model", "seconds", "failed", "date"), rows)
    if not rows:
        print(f"(no runs in {args.out}/)")


def cmd_report(args: argparse.Namespace) -> None:
    from .leaderboard.report import render_report

    folder = _run_folder(args)
    print(render_report(folder))
    print(f"rewrote {folder}/leaderboard.md, leaderboard.csv and plots/")


def cmd_list(args: argparse.Namespace) -> None:
    if args.kind == "tasks":
        import fnmatch

        from .cards import card_paths, load_card

        rows = []
        for name, path in sorted(card_paths(args.include_path).items()):
            if fnmatch.fnmatch(name, args.pattern):
                card = load_card(path)
                rows.append((name, f"{len(card.groups)} groups, {len(card.concepts)} concepts", card.description))
        _table(("task", "size", "description"), rows)
        return
    from .plugins import REGISTRIES

    registry = REGISTRIES[args.kind]
    rows = []
    for name in registry.names(args.pattern):
        obj = registry.get(name)
        if args.kind == "backbones":
            spec = obj()
            rows.append((name, spec.source, spec.description))
        else:
            doc = (obj.__doc__ or "").strip().splitlines()
            rows.append((name, obj.version, doc[0] if doc else ""))
    header = ("backbone", "source", "description") if args.kind == "backbones" else (args.kind[:-1], "version", "description")
    _table(header, rows)
    if not rows:
        print(f"(no {args.kind} registered yet)")


def cmd_show(args: argparse.Namespace) -> None:
    if args.kind in ("task", "backbone") and (args.model or args.task):
        raise UserError(f"--model and --task apply to `show defense|attack|metric`, not to `show {args.kind}`")
    if args.kind == "task":
        from .cards import get_card

        _show_card(get_card(args.name, args.include_path))
        return
    if args.kind == "backbone":
        _show_backbone(args.name, args.allow_pickle)
        return
    from .plugins import REGISTRIES

    registry = REGISTRIES[f"{args.kind}s"]
    obj = registry.get(args.name)
    print(f"{args.kind} {args.name} (version {obj.version}) from {registry.origin(args.name)}")
    print((obj.__doc__ or "").strip())
    _show_config(obj, args)


def _show_config(plugin_cls, args: argparse.Namespace) -> None:
    """Each config field: allowed values, paper default, every preset's value, help; with --model or
    --task also the value in force on that backbone (default tiny-sd) for that task's kind (default: each kind)."""
    from .config import options, task_kinds, validate
    from .plugins import plugin_label, resolve_config

    config_cls = getattr(plugin_cls, "Config", object)
    fields_ = options(config_cls)
    if not fields_:
        print("\nno options")
        return
    label = plugin_label(plugin_cls)
    presets = {key: validate(config_cls, values, label, lambda f, v: label)  # as they apply: "2e-5" → 2e-05
               for key, values in (getattr(plugin_cls, "presets", {}) or {}).items()}
    in_force = []
    if args.model or args.task:
        from .cards import get_card

        model = args.model or "tiny-sd"
        kinds = [get_card(args.task, args.include_path).kind] if args.task else list(task_kinds())
        in_force = [(f"{model}, {kind}", resolve_config(plugin_cls, model, kind)) for kind in kinds]
    print(f"\noptions (override with --set {args.name}.FIELD=VALUE; presets apply by task kind, backbone, "
          "then backbone/kind):")
    for f in fields_:
        print(f"\n  {f.name}: {f.allowed}")
        if f.help:
            print(f"      {f.help}")
        print(f"      paper default: {f.default!r}")
        for key, values in presets.items():
            if f.name in values:
                print(f"      preset {key}: {values[f.name]!r}")
        for where, resolved in in_force:
            value, source = getattr(resolved.config, f.name), resolved.source[f.name]
            print(f"      in force on {where}: {value!r} ({source})")


def _show_backbone(name: str, allow_pickle: bool) -> None:
    """The spec, then the model itself loaded through the one loader (so this checks it is usable)."""
    from .backbones import load_backbone, resolve_spec

    _, spec = resolve_spec(name)
    for f in fields(spec):
        print(f"{f.name}: {getattr(spec, f.name)}")
    model = load_backbone(name, allow_pickle=allow_pickle)
    print(f"folder: {model.folder}\nfingerprint: {model.fingerprint}\nresolution: {model.resolution} px "
          f"(latents {model.unet.config.sample_size}, VAE x{model.vae_scale_factor})")
    for part in ("unet", "vae", "text_encoder"):
        module = getattr(model, part)
        print(f"{part}: {type(module).__name__}, {sum(p.numel() for p in module.parameters()):,} parameters")
    print(f"tokenizer: {type(model.tokenizer).__name__}, {len(model.tokenizer)} tokens")


def _show_card(card) -> None:
    from .plugins import ATTACKS, DEFENSES

    print(f"task {card.task} (version {card.metadata.version}) — {card.description}")
    if card.metadata.source:
        print(f"source: {card.metadata.source}")
    print(f"kind: {card.kind}, concepts: {card.concept_type}, prompt: {card.prompt!r}")
    start = card.start_model.defense or "base model"
    missing = "" if card.start_model.defense in (None, *DEFENSES.names()) else "  [not implemented yet]"
    print(f"start model: {start} (erases: {card.start_model.erase}){missing}")
    attacks = [a if a in ATTACKS else f"{a} [not implemented yet]" for a in card.attacks]
    print(f"attacks: {', '.join(attacks)}; report step {card.report_step}; checkpoints {card.checkpoints}")
    print(f"regularization: {card.regularization.images} images of {card.regularization.prompt!r}")
    print(f"worst case over an --attack-sweep: the attack's damage to the others' accuracy within epsilon "
          f"{card.worst_case.epsilon} of its damage to none's")
    print()
    rows = []
    for name in card.groups:
        group = card.group(name)
        rows.append((name, " + ".join(card.concepts[c].name for c in group.targets),
                     ", ".join(card.concepts[c].name for c in group.others)))
    _table(("group", "targets", "others (MRSGR)"), rows)
    print()
    rows = [(cid, c.name, c.category or "", c.cc101_folder or "") for cid, c in card.concepts.items()]
    _table(("concept", "prompt name", "category", "CustomConcept101 folder"), rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format(*header).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*map(str, row)).rstrip())


def cmd_world(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .store import check_writable

    if args.world_command == "train":
        _world_train(args)
    elif args.world_command == "train-judges":
        from .world.judges import train_judges

        if args.out:
            check_writable(args.out, "--out")
        train_judges(args.out, seed=args.seed)
    elif args.world_command == "check":
        from .runner import run_folder
        from .world.check import world_check

        if args.n_eval < 1:
            raise UserError(f"--n-eval must be >= 1, got {args.n_eval}")
        if args.lora_seeds is not None and args.lora_seeds < 1:
            raise UserError(f"--lora-seeds must be >= 1, got {args.lora_seeds}")
        if args.weights and not Path(args.weights).is_dir():
            raise UserError(f"--weights {args.weights}: no such folder; pass a `world train --out` folder")
        run_dir = run_folder(args.out, args.name, "world-check")
        seeds = {} if args.lora_seeds is None else {"lora_seeds": args.lora_seeds}
        report = world_check(run_dir, n_eval=args.n_eval, weights=args.weights, **seeds)
        missed = [t["name"] for t in report["targets"] if not t["met"]]
        print(f"world check: {len(report['targets']) - len(missed)}/{len(report['targets'])} targets met "
              f"in {report['seconds']:.0f} s; report in {run_dir}/world_report.md")
        for name in missed:
            print(f"  missed: {name}")


def _check_device(device: str) -> None:
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a torch device; pass e.g. cpu or cuda") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: torch sees no CUDA GPU here; pass --device cpu")


def _world_train(args: argparse.Namespace) -> None:
    from dataclasses import replace
    from pathlib import Path

    from .backbones import EMBEDDED_WEIGHTS
    from .progress import Progress
    from .store import check_writable
    from .world.train import (WorldTrainConfig, finished_vae_stage, pretraining_examples, pretraining_size,
                              train_world_model, write_model_card)

    overrides = {"unet_steps": args.unet_steps, "vae_steps": args.vae_steps,
                 "images_per_concept": args.images_per_concept, "seed": args.seed,
                 "unattributed_art": args.unattributed_art, "anonymous_art": args.anonymous_art,
                 "rare_token_captions": args.rare_token_captions, "vae_crop": args.vae_crop}
    for name, value in overrides.items():
        if value is not None and value < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    for name in ("unattributed_art", "rare_token_captions"):
        if overrides[name] is not None and overrides[name] > 1:
            raise UserError(f"--{name.replace('_', '-')} is a share in [0, 1], got {overrides[name]}")
    cfg = WorldTrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    if cfg.vae_crop and not 8 <= cfg.vae_crop <= cfg.arch.resolution:
        raise UserError(f"--vae-crop must be 0 or between 8 and the resolution {cfg.arch.resolution}, got {cfg.vae_crop}")
    if args.attention_heads:
        levels = len(cfg.arch.unet_channels)
        if len(args.attention_heads) != levels or any(
                n < 1 or c % n for n, c in zip(args.attention_heads, cfg.arch.unet_channels)):
            raise UserError(f"--attention-heads takes {levels} numbers that divide the channels "
                            f"{list(cfg.arch.unet_channels)}, got {args.attention_heads}")
        cfg = replace(cfg, arch=replace(cfg.arch, attention_head_dim=tuple(args.attention_heads)))
    _check_device(args.device)
    out = Path(args.out) if args.out else EMBEDDED_WEIGHTS / "tiny-sd"
    work = Path(args.work) if args.work else Path.home() / ".cache" / "immunobench" / "world-train"
    check_writable(out, "--out")
    check_writable(work, "--work")
    if args.vae_from:  # refuse a mismatched donor before the minute of rendering
        finished_vae_stage(Path(args.vae_from), cfg, pretraining_size(cfg.images_per_concept, cfg.anonymous_art))
    progress = Progress()
    examples = pretraining_examples(cfg.images_per_concept, cfg.seed, cfg.arch.resolution, progress,
                                    cfg.unattributed_art, cfg.anonymous_art)
    report = train_world_model(examples, out, work, cfg, progress, vae_from=args.vae_from, device=args.device)
    write_model_card(out, report)
    print(f"tiny-sd written to {out} ({report['seconds']:.0f} s); checkpoints in {work}")


def cmd_new(args: argparse.Namespace) -> None:
    from .scaffold import new_defense

    file = new_defense(args.name, args.out, args.force)
    print(f"wrote {file}: edit its update rule, then\n  immunobench check-plugin {file}\n"
          f"  immunobench run --plugin {file} --defense {args.name} --task relearn-style --groups 2c-1")


def cmd_check_plugin(args: argparse.Namespace) -> int:
    from .plugin_check import run_check

    problems, found = run_check(args.file)
    for line in problems:
        print(f"immunobench: error: {line}", file=sys.stderr)
    if problems:
        return EXIT_BAD_INPUT
    print(f"ok: {args.file} registers {found[0]}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> None:
    from .leaderboard.bundle import BundleError, make_bundle

    run_dir = _run_folder(args)
    try:
        path = make_bundle(run_dir, args.to)
    except BundleError as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {path}; check it with: immunobench verify {path}")


def cmd_verify(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .leaderboard.bundle import BundleError, verify_bundle

    if not Path(args.bundle).exists():
        raise UserError(f"verify {args.bundle}: no such file; pass a bundle written by `immunobench bundle`")
    try:
        index = verify_bundle(args.bundle)
    except BundleError as exc:
        raise UserError(f"rejected: {exc}") from None
    print(f"verified: {args.bundle} — task {index['task']}, model {index['model']}, defenses "
          f"{', '.join(index['defenses'])}, schema {index['schema_version']}, content hash {index['content_hash'][:16]}")


def cmd_publish(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .leaderboard.publish import (REPO_ID, PublishError, check_space_source, load_submission, publish_folder,
                                      publish_hub)

    if not args.repo and not args.to:
        raise UserError("publish: pass --repo OWNER/NAME (a hub dataset) or --to DIR (a folder), or both")
    for flag, value in (("--repo", args.repo), ("--space", args.space)):
        if value and not REPO_ID.match(value):
            raise UserError(f"{flag} {value!r}: expected OWNER/NAME, e.g. me/immunobench-results")
    if args.space and not args.repo:
        raise UserError("--space needs --repo: the Space shows the results dataset that --repo names")
    if args.endpoint and not args.endpoint.startswith(("http://", "https://")):
        raise UserError(f"--endpoint {args.endpoint!r}: expected a URL such as https://huggingface.co")
    source = Path(args.run)
    if not source.is_file():
        source = _run_folder(args, writable=False)
    try:
        if args.space:
            check_space_source()  # before anything is written, here or on the hub
        submission = load_submission(source)
        if args.to:
            written = publish_folder(submission, args.to, dry_run=args.dry_run)
            if not args.dry_run:
                print(f"wrote {len(written)} file(s) to {args.to} (bundle {submission.hash16})")
        if args.repo:
            publish_hub(submission, args.repo, space=args.space, endpoint=args.endpoint, dry_run=args.dry_run)
    except PublishError as exc:
        raise UserError(str(exc)) from None


def cmd_reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .leaderboard.bundle import BundleError
    from .leaderboard.reproduce import reproduce

    if not Path(args.bundle).is_file():
        raise UserError(f"reproduce {args.bundle}: no such file; pass a bundle written by `immunobench bundle`")
    if args.cells < 1 or args.workers < 1:
        raise UserError("--cells and --workers must be >= 1")
    try:
        record = reproduce(args.bundle, args.cells, args.seed, workers=args.workers)
    except BundleError as exc:
        raise UserError(f"cannot reproduce: {exc}") from None
    done = sum(c["passed"] for c in record["cells"])
    print(f"{done} of {len(record['cells'])} cell(s) reproduced within tolerance; record: {args.bundle}.reproduced.json")
    return 0 if record["passed"] else EXIT_NOT_REPRODUCED


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from pathlib import Path

    root = Path(args.root)
    if not (root / "index.json").is_file() and not (root / "rows").is_dir():
        raise UserError(f"leaderboard serve --from {root}: no index.json or rows/ there; pass a folder written by "
                        "`immunobench publish RUN --to DIR`")
    try:
        import gradio  # noqa: F401  (an optional extra: the rest of immunobench runs without it)
    except ImportError:
        raise UserError("the leaderboard app needs gradio: pip install 'immunobench[leaderboard]'") from None
    from .leaderboard.space.app import serve

    print(f"leaderboard of {root} on http://{args.host}:{args.port} (Ctrl-C stops it)")
    serve(root, args.host, args.port)


COMMANDS = {"list": cmd_list, "show": cmd_show, "world": cmd_world, "run": cmd_run, "runs": cmd_runs,
            "report": cmd_report, "new": cmd_new, "check-plugin": cmd_check_plugin, "bundle": cmd_bundle,
            "verify": cmd_verify, "reproduce": cmd_reproduce, "publish": cmd_publish, "leaderboard": cmd_leaderboard}
NO_PLUGINS = {"leaderboard"}  # reads published rows only: importing the plugins (and torch) would only slow it


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command not in NO_PLUGINS:
            _load_plugins(args)
        return COMMANDS[args.command](args) or 0
    except UserError as exc:
        print(f"immunobench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("immunobench: interrupted; finished work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
