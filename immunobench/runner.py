"""The grid runner: ``immunobench run`` crosses defenses × attacks × seeds × groups of one task card.

A cell is (task, group, defense, attack, seed); its stages are artifacts in the content-addressed
store (``immunobench.store``), each keyed by the keys of its inputs, its config and its plugin's
version:

    images     base model generations per prompt and seed range (defense, attack, references,
               regularization sets) — shared by every cell that needs the same prompt and seeds
    start      the card's start model (UCE erasing the group, preserving the card's declared
               ``start_model.preserve`` prompts) — setup shared by every defense and seed
    immunize   defense(start model, view) — absent for ``none``, whose attack is therefore shared
               by every defense of the grid. The view (``data.DefenseData``) holds the targets'
               defense-phase prompts and images, the regularization images and a generic caption
               set (``immunobench.captions``) — never the attack split, the references, the card
               or the scored "others"
    attack     attack(immunized model) with generations of the targets at the checkpoints and of
               the others at step 0 (before the attack) and at the reporting step
    selection  with ``--attack-sweep`` only: generations of the targets and the others at the attack's report
               step on the selection seeds, from which ``leaderboard.worst_case`` picks the worst case; its
               own artifact, so a sweep's default point has exactly the keys of a run without the sweep.
               The others before any attack on the selection seeds are the model's own ``before`` stage
               (the level the worst case's ε guard measures an attack's damage from)
    score      judge scores of one attack's generations (references; paired with the no-defense run)

A run killed at any point (SIGKILL included) resumes from the finished artifacts; a cell that
fails (NaN loss, out of memory, a plugin's error) is recorded with its reason and the grid goes on.

A run has three phases (their wall times go into the manifest): **plan** walks the grid against the
store and lists the missing image sets, start models and cells; **workers** computes them in one
single-threaded process per core (``immunobench.parallel``; image sets first, then cells, largest
first); **walk** goes over the grid again in this process, finds everything stored, computes the
paired scores and collects the rows. With one worker (a GPU, ``--workers 1``) the walk computes it all.

Seeds: run seed s offsets every image seed by s·100000 and seeds the plugins. Attack images use
seeds 0–19 (+offset), defense images 1000+, references 3000+, regularization 5000+, evaluation
10000+, selection 20000+: the defense never sees the attacker's images, no evaluation shares initial
noise with a training image (IMMA/MIMA use disjoint splits), and the worst case of a sweep is chosen on
images other than those its figures are reported on.

``--attack-sweep lora.lr=1e-4,1e-3 lora.report_step=200,400`` makes each attack's grid the product of the
values given, plus the attack's config in force (the default point). Each point is a *variant*: its own
config (validated as ``--set`` is) and report step (the attack budget: one of the run's checkpoints; the
attack stops there), hence its own store keys. The default point draws the curves (every checkpoint);
every other point is measured at its report step only, where the worst case is chosen and reported: the
same training, the same images at that step, and for personalization (report step 40 of 200) a fifth of
the training.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import ValidationError

from .backbones import Backbone, load_backbone, resolve_spec
from .cards import ConceptGroup, TaskCard, get_card
from .data import ConceptImages, TaskData, defense_view, start_model_view
from .config import Resolved
from .diffusion import sample
from .errors import UserError, describe_failure
from .plugins import (
    SIMILARITY_ROLES, UNCONSTRAINED, defense_plugin, get_attack, get_defense, get_metric, judges_for, resolve_config,
    source_hash,
)
from .progress import Progress
from .snapshot import LoopSnapshot
from .store import (
    DEFAULT_STORE, IMAGE_SETS_FORMAT, KEYS_VERSION, ImageKey, Store, artifact_key, canonical, image_sets_artifact,
    read_image_sets, check_writable,
)

# built-in plugin files are recorded relative to this folder (the repository, or site-packages)
PLUGIN_ROOT = Path(__file__).resolve().parent.parent
SEED_STRIDE = 100_000
EXECUTORS = ("local", "ray")
SEED_OFFSETS = {"attack": 0, "defense": 1_000, "references": 3_000, "regularization": 5_000, "eval": 10_000,
                "selection": 20_000}
# Version of a run folder's results.parquet columns and manifest.json keys (docs/results-schema.md);
# bump it when either changes incompatibly. Carried as the manifest's "schema_version" and as the
# parquet file's key-value metadata "immunobench.schema_version".
SCHEMA_VERSION = 2  # 2: results columns attack_config and split; manifest resolved.attack_sweep, worst_case
DEFAULT_VARIANT = "default"  # the attack_config of an attack's config in force (every run's only point without a sweep)
BUDGET_FIELD = "report_step"  # the one --attack-sweep field that is no Config field: the attack's budget
GRID_STAGES = ("immunize", "attack", "attack-alone", "score")  # counted by the grid's progress bar


@dataclass(frozen=True)
class RunConfig:
    task: str
    defenses: tuple[str, ...] = ("mima",)
    attacks: tuple[str, ...] = ()  # empty = the card's default attacks
    groups: tuple[str, ...] = ()  # empty = every group of the card
    seeds: tuple[int, ...] = (0,)
    model: str = "tiny-sd"
    # the judges' metric family (plugins.METRIC_FAMILIES: "real" CLIP/DINO/LPIPS/ResNet50 from the local cache,
    # "world" the embedded world's, offline); empty = the backbone's (BackboneSpec.metric_family)
    judges: str = ""
    device: str = "cpu"
    out: str = "runs"
    store: str = str(DEFAULT_STORE)  # a folder or an fsspec URL (s3://…, gs://…, memory://…): store.Store
    name: str = ""  # one folder name inside ``out``; empty = <task>-<date>-<time>
    # Overrides of the card, validated by the card's own rules (checkpoints strictly increasing,
    # the report step one of them): an override the card would reject stops the run before it starts.
    eval_images: int = 0  # 0 = the card's
    checkpoints: tuple[int, ...] = ()  # empty = the card's
    report_step: int | None = None  # None = the card's
    sample_steps: int = 0  # 0 = the backbone's
    overrides: dict = field(default_factory=dict)  # plugin name → {config field: value}
    include_paths: tuple[str, ...] = ()
    allow_pickle: bool = False
    workers: int = 0  # --jobs: processes computing stages; 0 = one per core on CPU, one on a GPU
    executor: str = "local"  # "local": worker processes on this machine; "ray": Ray tasks (immunobench.parallel)
    address: str = ""  # --executor ray: a cluster's address ("auto", "ray://head:10001"); empty = a local Ray instance
    attack_sweep: dict = field(default_factory=dict)  # attack → {config field or "report_step": (values, …)}
    snapshot_every_s: float = 300.0  # seconds between snapshots of an immunization's loop (0: every step)


@dataclass(frozen=True)
class Variant:
    """One point of an attack's sweep: its label ("default" or ``lora[lr=0.001,rank=16]``), config in
    force, report step and checkpoints (the default point: the run's; every other point: its report step)."""

    label: str
    resolved: Resolved
    report_step: int
    checkpoints: tuple[int, ...]
    swept: dict = field(default_factory=dict)  # the swept fields' values in force at this point

    def cell_name(self, attack: str) -> str:
        """How failures and worker jobs name the cell's attack: the bare name for the default point."""
        return attack if self.label == DEFAULT_VARIANT else self.label


class _Missing(Exception):
    """Planning: a stage the store does not hold yet."""


@dataclass
class _Plan:
    images: dict = field(default_factory=dict)  # image key → (prompt, role, count, seed)
    starts: dict = field(default_factory=dict)  # start key → group name
    immunizations: dict = field(default_factory=dict)  # (group, seed, defense) → None, ordered
    cells: list = field(default_factory=list)  # (group, seed, attack, defense, variant label)


class CellFailed(Exception):
    pass


class _PeakMemory:
    """A stage's cost: wall time, peak resident memory of this process (sampled), CUDA's peak if used,
    and the UNet's work — forward calls and the images they carried (classifier-free guidance counts
    its two halves) — counted by a global module hook, so every defense and attack is measured alike
    without reporting anything itself."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0
        self.unet_calls = self.unet_images = 0
        self._stop = threading.Event()

    def _count_unet(self, module, args, kwargs, output):
        if type(module).__name__ == "UNet2DConditionModel":
            sample = args[0] if args else kwargs.get("sample")
            self.unet_calls += 1
            self.unet_images += int(sample.shape[0]) if hasattr(sample, "shape") else 0

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: the process-wide high-water mark
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _watch(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self.peak = self._rss()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self._hook = torch.nn.modules.module.register_module_forward_hook(self._count_unet, with_kwargs=True)
        self.started = time.time()
        return self

    def __exit__(self, *exc):
        self._hook.remove()
        self._stop.set()
        self._thread.join()
        self.seconds = time.time() - self.started
        self.peak = max(self.peak, self._rss())
        self.cost = {"seconds": round(self.seconds, 2), "peak_rss_mb": round(self.peak / 2**20, 1),
                     "unet_calls": self.unet_calls, "unet_images": self.unet_images}
        if self.device.startswith("cuda"):
            self.cost["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _from_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0


def _config_dict(cfg) -> dict:
    return asdict(cfg) if is_dataclass(cfg) else dict(getattr(cfg, "__dict__", {}))


def _seeded(cfg, seed: int):
    """A plugin's config with the cell's seed, where it has a ``seed`` field."""
    return replace(cfg, seed=seed) if "seed" in _config_dict(cfg) else cfg


class Runner:
    def __init__(self, cfg: RunConfig, progress: Progress | None = None, log: Callable[[str], None] = print):
        """Checks everything the run is given (a ``UserError`` otherwise) before any work or write."""
        self.cfg = cfg
        self.progress = progress or Progress()
        self.log = log
        if cfg.executor not in EXECUTORS:
            raise UserError(f"executor {cfg.executor!r}: choose one of {', '.join(EXECUTORS)}")
        self.store = Store(cfg.store)
        self.card: TaskCard = get_card(cfg.task, list(cfg.include_paths))
        # worst_case only steers the leaderboard's choice among stored cells: no stage depends on it
        self.card_hash = artifact_key("card", card=self.card.model_dump(mode="json", exclude={"worst_case"}))
        unknown = [g for g in cfg.groups if g not in self.card.groups]
        if unknown:
            raise UserError(f"task {cfg.task}: unknown group {unknown[0]!r}; groups: {', '.join(self.card.groups)}")
        self.groups = list(cfg.groups or self.card.groups)
        self.defenses = ["none"] + [d for d in _expand_all(cfg.defenses) if d != "none"]
        for name in self.defenses:
            get_defense(name)  # unknown names fail before any work
        self.defenses = [row for d in self.defenses for row in
                         ([d, d + UNCONSTRAINED] if get_defense(d).publishes_constraints else [d])]
        self.attacks = list(cfg.attacks or self.card.attacks)
        # self.card stays the card as written (its hash keys the store); the overrides only set these
        effective = _effective_card(self.card, cfg)
        self.report_step = effective.report_step
        self.checkpoints = list(effective.checkpoints)
        self.eval_images = effective.data.eval_images
        for name in self.attacks:
            get_attack(name)
        plugins = {*map(defense_plugin, self.defenses), *self.attacks, self.card.start_model.defense}
        unknown = sorted(set(cfg.overrides) - plugins)
        if unknown:
            raise UserError(f"--set {unknown[0]}.…: {unknown[0]!r} is not a plugin of this run ({', '.join(sorted(p for p in plugins if p))})")
        self.model_name = resolve_spec(cfg.model)[0]  # presets need the name only, not the weights
        if cfg.judges:
            judges_for(cfg.judges)  # an unknown family fails before any work
        # resolved once, before any work: a bad --set fails now, not after an hour
        self.configs: dict[str, Resolved] = {name: self.resolved_config(cls, name) for name, cls in self._plugins()}
        self.variants: dict[str, list[Variant]] = self._sweep_variants()
        self.run_dir = run_folder(cfg.out, cfg.name, self.card.task)
        if not self.store.remote:  # a remote store is probed by its first write; a bad URL failed in Store()
            check_writable(self.store.root, "--store")
        self.stats = {"computed": {}, "cached": {}}
        self.failures: list[dict] = []
        self.keys: dict[str, list[str]] = {}
        self.cells: list[dict] = []
        self.computed_keys: list[str] = []
        self._plan: _Plan | None = None
        self.workers = 1
        self.phases: dict[str, float] = {}  # wall seconds of the run's phases
        self._by_workers: set[str] = set()  # keys the workers computed in this run
        self._failed: dict[tuple, dict] = {}  # cells that failed in a worker, not to be recomputed
        self._stage_bar = None
        self._photos: dict[str, tuple] = {}  # instance → (photos, source, views): read once per run
        self._pending_selection: dict[str, dict] = {}  # selection key → images sampled along with their attack
        self._selection_keys: dict[str, str] = {}  # attack key → its selection split's key
        self._before_keys: dict[str, list[str]] = {}  # attack key → the keys of its others before the attack
        self._selection_before_keys: dict[str, list[str]] = {}  # the same on the selection split (a sweep's default)

    # --- plugins and their configs -------------------------------------------------------
    def plugin_config(self, name: str):
        return self.configs[name].config

    def resolved_config(self, cls, name: str) -> Resolved:
        """The plugin's config on this backbone and task kind: paper default, presets, then ``--set``.
        Needs no loaded model (``cfg.model`` is the name ``load_backbone`` gives it), so it can run first."""
        return resolve_config(cls, self.model_name, self.card.kind, self.cfg.overrides.get(name),
                              origin=lambda field, value: f"--set {name}.{field}={value}")

    def _sweep_variants(self) -> dict[str, list[Variant]]:
        """Each attack's points: the default first, then the product of the swept values in the order given
        (a point equal to an earlier one, the default included, is that point)."""
        unknown = sorted(set(self.cfg.attack_sweep) - set(self.attacks))
        if unknown:
            raise UserError(f"--attack-sweep {unknown[0]}.…: {unknown[0]!r} is not an attack of this run "
                            f"({', '.join(self.attacks)}; choose them with --attack)")
        out = {}
        for attack in self.attacks:
            default = Variant(DEFAULT_VARIANT, self.configs[attack], self.report_step, tuple(self.checkpoints))
            points = [default]
            spec = self.cfg.attack_sweep.get(attack, {})
            names = list(spec)
            out[attack] = points
            if not spec:
                continue
            if "seed" in names:
                raise UserError(f"--attack-sweep {attack}.seed=…: the runner sets each cell's seed; sweep seeds with --seeds")
            for values in itertools.product(*(spec[n] for n in names)):
                point = dict(zip(names, values))
                step = self._budget(attack, point.pop(BUDGET_FIELD)) if BUDGET_FIELD in point else self.report_step
                resolved = resolve_config(
                    get_attack(attack), self.model_name, self.card.kind, {**self.cfg.overrides.get(attack, {}), **point},
                    origin=lambda f, v, a=attack: f"--attack-sweep {a}.{f}={v}")
                same = [p for p in points if p.report_step == step
                        and _config_dict(p.resolved.config) == _config_dict(resolved.config)]
                if same:
                    continue
                swept = {n: (step if n == BUDGET_FIELD else getattr(resolved.config, n)) for n in names}
                label = f"{attack}[{','.join(f'{n}={v}' for n, v in swept.items())}]"
                # measured at its budget only: the worst case and its figures are read there, the curves are the
                # default point's; the training is the same (tests/test_before.py), the sampling a fraction
                points.append(Variant(label, resolved, step, (step,), swept))
        return out

    def _budget(self, attack: str, value) -> int:
        """A swept report step: one of the run's checkpoints (a budget elsewhere needs --checkpoints too)."""
        try:
            step = int(str(value))
        except ValueError:
            step = None
        if step is None or step not in self.checkpoints:
            raise UserError(f"--attack-sweep {attack}.{BUDGET_FIELD}={value}: not one of the run's checkpoints "
                            f"{self.checkpoints}; the budget is a checkpoint (add more with --checkpoints)")
        return step

    def _variant(self, attack: str, label: str) -> Variant:
        return next(v for v in self.variants[attack] if v.label == label)

    @property
    def sweeping(self) -> bool:
        return bool(self.cfg.attack_sweep)

    # --- store helpers ---------------------------------------------------------------------
    def _ensure(self, stage: str, key: str, compute: Callable[[], tuple[dict, dict]]):
        artifact = self.store.get(key)
        if artifact is None:
            if self._plan is not None:
                raise _Missing(stage)
            artifact = self._compute(stage, key, compute)
        elif key not in self._by_workers:
            self.stats["cached"][stage] = self.stats["cached"].get(stage, 0) + 1
        self.keys.setdefault(stage, []).append(key)
        if stage in GRID_STAGES and self._stage_bar is not None:
            self._stage_bar.advance()
        return artifact

    def _compute(self, stage: str, key: str, compute: Callable[[], tuple[dict, dict]]):
        # A stage is a pure function of its key: plugins that draw from torch's global RNG (peft's
        # LoRA init, say) get the same state whatever ran before in this process.
        with _PeakMemory(self.cfg.device) as usage, torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(key[:12], 16))
            meta, tensors = compute()
        meta = {"stage": stage, "cost": usage.cost, **meta}
        self._count_computed(stage, {"count": 1, **usage.cost})
        self.computed_keys.append(key)
        return self.store.put(key, meta, tensors)

    def _count_computed(self, stage: str, cost: dict) -> None:
        """Adds computed stages (count, seconds, peak RSS) to the run's statistics."""
        done = self.stats["computed"].setdefault(stage, {"count": 0, "seconds": 0.0, "peak_rss_mb": 0.0,
                                                          "unet_calls": 0, "unet_images": 0})
        for k in ("unet_calls", "unet_images"):
            done[k] += cost.get(k, 0)
        done["count"] += cost["count"]
        done["seconds"] = round(done["seconds"] + cost["seconds"], 2)
        done["peak_rss_mb"] = max(done["peak_rss_mb"], cost["peak_rss_mb"])

    # --- stages ----------------------------------------------------------------------------
    def images(self, prompt: str, role: str, count: int, seed: int):
        """Generations of the base model (before the start model's erasure): the concept's own images,
        as MIMA §5.1 draws the defense's and the attacker's 20 from SD itself."""
        seeds = role_seeds(role, count, seed)
        key = artifact_key("images", model=self.model_root, prompt=prompt, seeds=seeds, sampler=self.sampler)
        if self._plan is not None and not self.store.has(key):
            self._plan.images[key] = (prompt, role, count, seed)
            return key, torch.empty(count, 3, 0, 0)  # the keys downstream need, not the pixels

        def compute():
            bar = self.progress.task(f"sample {role} '{prompt}'", total=count)
            x = sample(self.model, [prompt] * count, seeds, batch_size=16, on_batch=bar.advance, **self._sampling)
            return {"prompt": prompt, "role": role, "seeds": seeds}, {"tensors": {"images": _to_uint8(x)}}

        art = self._ensure("images", key, compute)
        return key, _from_uint8(art.tensors()["images"])

    def class_images(self, model_key: str, model: Backbone) -> Callable[[str, list[int]], torch.Tensor]:
        """``TaskData.draw_class_images`` for an attack on ``model``: DreamBooth's and Custom Diffusion's
        class images as a stage keyed by the attacked model, the class prompt and the seeds, so one model's
        images of a class are drawn once for every attack, group and sweep point that uses them (the
        undefended model's, for every group of the card). Its time counts in the stage that drew it first."""

        def draw(prompt: str, seeds: list[int]) -> torch.Tensor:
            seeds = list(seeds)
            key = artifact_key("class-images", model=model_key, prompt=prompt, seeds=seeds, sampler=self.sampler)

            def compute():
                bar = self.progress.task(f"class images '{prompt}'", total=len(seeds))
                x = sample(model, [prompt] * len(seeds), seeds, batch_size=16, on_batch=bar.advance, **self._sampling)
                return {"prompt": prompt, "role": "class", "seeds": seeds}, {"tensors": {"images": _to_uint8(x)}}

            return _from_uint8(self._ensure("class-images", key, compute).tensors()["images"])

        return draw

    def start_model(self, group: ConceptGroup) -> tuple[str, Backbone]:
        spec = self.card.start_model
        if spec.defense is None:
            return self.model_root, self.model
        cls = get_defense(spec.defense)
        cfg = self.plugin_config(spec.defense)
        erased = group.start_erased()
        preserve = group.start_preserve_prompts()
        key = artifact_key("start", model=self.model_root, card=self.card_hash, targets=erased.targets,
                           defense=spec.defense, version=cls.version, source=source_hash(cls), config=_config_dict(cfg),
                           preserve=preserve)
        if self._plan is not None and not self.store.has(key):
            self._plan.starts[key] = group.name
            return key, None

        def compute():
            immunized = cls().immunize(self.model, start_model_view(erased), cfg)
            return ({"defense": spec.defense, "info": immunized.info, "preserve": preserve},
                    {"unet": immunized.unet, "text_encoder": immunized.text_encoder})

        art = self._ensure("start", key, compute)
        return key, self.model.with_weights(unet=art.tensors("unet"), text_encoder=art.tensors("text_encoder"))

    def task_data(self, group: ConceptGroup, seed: int) -> tuple[TaskData, dict[str, list[str]]]:
        """The cell's data: per target its defense and attack splits, per scored concept its references
        (``data.source``: generated by the base model, or an instance's own photos), and the
        regularization set — per distinct class prompt of the targets (``ConceptGroup.class_prompt``:
        "artwork" once on the style card; "purse" and "houseplant" for two instances, as MIMA §5.2)."""
        data, keys = TaskData(), {"defense": [], "attack": [], "references": [], "regularization": [], "attack_of": {}}
        spec = self.card.data
        if spec.source == "references":
            self._reference_data(group, data, keys)
        else:
            for c in group.targets:
                for role, count in (("defense", spec.defense_images), ("attack", spec.attack_images)):
                    prompt = group.prompt(c, phase=role)
                    k, x = self.images(prompt, role, count, seed)
                    getattr(data, role)[c] = ConceptImages(x, [prompt] * count)
                    keys[role].append(k)
            for c in group.scored:
                k, x = self.images(group.prompt(c) if c in group.targets else self.card.prompt_for(c),
                                   "references", self.eval_images, seed)
                data.references[c] = x
                keys["references"].append(k)
        reg = self.card.regularization
        if any(get_defense(defense_plugin(d)).needs_regularization for d in self.defenses):
            sets = []
            for prompt in dict.fromkeys(group.class_prompt(c) for c in group.targets):
                k, x = self.images(prompt, "regularization", reg.images, seed)
                sets.append(ConceptImages(x, [prompt] * reg.images))
                keys["regularization"].append(k)
            data.regularization = ConceptImages(torch.cat([r.images for r in sets]), [p for r in sets for p in r.prompts])
        return data, keys

    def _reference_data(self, group: ConceptGroup, data: TaskData, keys: dict) -> None:
        """``data.source: references``: each scored instance's photos split into disjoint defense,
        attack and reference views (``references.split_views``; the same views for every run seed, as
        a dataset's photos are). The others get an attack split too: MRSGR adapts each of them alone."""
        from .references import reference_photos, split_views

        spec = self.card.data
        for c in group.scored:
            if c not in self._photos:
                wanted = spec.defense_images + spec.attack_images + self.eval_images
                photos, source = reference_photos(self.model.spec, c, self.card.concepts[c], wanted, self.model.resolution)
                self._photos[c] = (photos, source, split_views(len(photos), spec.defense_images, spec.attack_images,
                                                               self.eval_images))
            split = {role: self._views(c, role) for role in ("defense", "attack", "references")}
            if c in group.targets:
                for role in ("defense", "attack"):
                    key, x = split[role]
                    getattr(data, role)[c] = ConceptImages(x, [group.prompt(c, phase=role)] * len(x))
                    keys[role].append(key)
            else:
                key, x = split["attack"]
                data.attack[c] = ConceptImages(x, [group.alone(c).prompt(c)] * len(x))
            keys["attack_of"][c] = split["attack"][0]
            data.references[c] = split["references"][1]
            keys["references"].append(split["references"][0])

    def _views(self, concept: str, role: str) -> tuple[str, torch.Tensor]:
        """One role's views of an instance as an image artifact (stored like generated image sets, so
        plots and reruns read them back; cheap, so made at once, even while planning)."""
        photos, source, views = self._photos[concept]
        key = artifact_key("images", source=source, role=role, views=list(views[role]))
        art = self.store.get(key)
        if art is None:
            art = self._compute("images", key, lambda: ({"concept": concept, "role": role, "source": source,
                                                          "views": list(views[role])},
                                                         {"tensors": {"images": _to_uint8(photos[list(views[role])])}}))
        self.keys.setdefault("images", []).append(key)
        return key, _from_uint8(art.tensors()["images"])

    def immunize(self, defense: str, group: ConceptGroup, seed: int, start_key: str, start: Backbone,
                 data: TaskData, data_keys: dict) -> tuple[str, Backbone, Any]:
        from .plugins import Constraints

        if defense == "none":
            return start_key, start, Constraints()
        unconstrained, defense = defense.endswith(UNCONSTRAINED), defense_plugin(defense)
        cls = get_defense(defense)
        cfg = self.plugin_config(defense)
        if "seed" in _config_dict(cfg):
            cfg = replace(cfg, seed=seed)
        key = artifact_key("immunize", start=start_key, defense=defense, version=cls.version, source=source_hash(cls),
                           config=_config_dict(cfg),
                           data=[data_keys["defense"], data_keys["regularization"] if cls.needs_regularization else []],
                           captions=self.captions_source, seed=seed)

        snapshot = LoopSnapshot(self.store.snapshot_file(key), every_s=self.cfg.snapshot_every_s,
                                on_restore=lambda step: self.log(f"{defense} {group.name} seed {seed}: resuming at "
                                                                 f"step {step}, from the snapshot of a killed run"))

        def compute():
            plugin = cls()
            plugin.progress, plugin.snapshot = self.progress, snapshot
            result = plugin.immunize(start, self.defense_view(group, data), cfg)
            return ({"defense": defense, "info": result.info, "frozen": sorted(result.constraints.frozen),
                     "resumed_at_step": snapshot.resumed_at},
                    {"unet": result.unet, "text_encoder": result.text_encoder})

        art = self._ensure("immunize", key, compute)
        snapshot.discard()
        unet, text_encoder = art.tensors("unet"), art.tensors("text_encoder")
        # a release that changes no weight (FreezeAsGuard's) is the start model itself (see ``cell``)
        immunized = start.with_weights(unet=unet, text_encoder=text_encoder) if unet or text_encoder else start
        # the same immunized model; its twin row is attacked by someone who ignores the frozen set
        return key, immunized, Constraints(frozenset() if unconstrained else frozenset(art.meta.get("frozen", [])))

    def defense_view(self, group: ConceptGroup, data: TaskData):
        """What a defense gets (``data.DefenseData``): its targets' defense split and the regularization data."""
        return defense_view(group, data.defense, data.regularization, tuple(self.captions), self.captions_source)

    def attack(self, attack: str, group: ConceptGroup, seed: int, model_key: str, model: Backbone, constraints,
               data: TaskData, data_keys: dict, variant: Variant | None = None):
        variant = variant or self.variants[attack][0]
        cls = get_attack(attack)
        cfg = _seeded(variant.resolved.config, seed)
        checkpoints, report_step = list(variant.checkpoints), variant.report_step
        eval_seeds = role_seeds("eval", self.eval_images, seed)
        # the others as the judge classifies them (ConceptGroup.probe): themselves on the re-learning
        # cards, their categories for personal instances
        probes = dict(group.probe(c) for c in group.others)
        others = list(probes)
        # the others before the attack come from the model's own ``before`` stage, shared by its attacks
        before_keys, before = self.before(group, seed, model_key, model) if 0 in checkpoints else ([], {})
        others_at = {report_step} - {0}
        extra = {"probes": probes} if self.card.concept_type == "instance" else {}
        key = artifact_key("attack", model=model_key, card=self.card_hash, attack=attack, version=cls.version,
                           source=source_hash(cls), config=_config_dict(cfg),
                           data=data_keys["attack"], seed=seed, checkpoints=checkpoints, targets=group.targets,
                           others=others, others_at=sorted(others_at), before=before_keys, eval_seeds=eval_seeds,
                           sampler=self.sampler, frozen=sorted(constraints.frozen), images_format=IMAGE_SETS_FORMAT,
                           **extra)
        self._before_keys[key] = before_keys

        # a sweep samples its selection split while the attack runs, rather than training it twice
        selected = None
        if self.sweeping:
            selection_key, selection_concepts, selection_seeds = self._selection_spec(key, group, seed, report_step)
            selected = None if self.store.has(selection_key) else {}

        def compute():
            plugin = cls()
            plugin.progress = self.progress
            images, bar = {}, self.progress.task(f"{variant.cell_name(attack)} {group.name}", total=max(checkpoints))
            last = 0
            attack_data = replace(data, draw_class_images=self.class_images(model_key, model))
            for step, adapted in plugin.adapt(model, group, attack_data, cfg, constraints, list(checkpoints)):
                bar.advance(step - last)
                last = step
                # targets at every checkpoint (the curves); others at the reporting step (Tab. 5's after; MRSGR)
                concepts = list(group.targets) + (others if step in others_at else [])
                prompts = [probes[c] if c in probes else group.prompt(c) for c in concepts for _ in eval_seeds]
                x = sample(adapted, prompts, eval_seeds * len(concepts), batch_size=16, **self._sampling)
                for c, chunk in zip(concepts, x.split(len(eval_seeds))):
                    images[ImageKey(step, c)] = _to_uint8(chunk)
                if selected is not None and step == report_step:
                    selected.update(self._sample_sets(adapted, group, step, selection_concepts, selection_seeds))
            meta, tensors = image_sets_artifact(images)
            if selected is not None:
                self._pending_selection[selection_key] = selected
            return {"attack": attack, "checkpoints": checkpoints, "eval_seeds": eval_seeds, **meta}, tensors

        art = self._ensure("attack", key, compute)
        return key, {**before, **{k: _from_uint8(v) for k, v in read_image_sets(art).items()}}

    def before(self, group: ConceptGroup, seed: int, model_key: str, model: Backbone,
               split: str = "eval") -> tuple[list[str], dict]:
        """The group's others generated by ``model`` itself on the ``split``'s seeds: step 0 of every attack
        on it (Tab. 5's "before"; on the selection split, the level from which the worst case's ε guard
        measures an attack's damage). One stage per model and concept, so they are drawn once for all the
        model's attacks, sweep points and groups rather than once per attack. Exact, not an approximation:
        at step 0 an attack has not moved a weight those prompts use (LoRA's B = 0; Textual Inversion's and
        Custom Diffusion's new tokens are not in them), which ``tests/test_before.py`` checks for
        every attack."""
        seeds = role_seeds(split, self.eval_images, seed)
        keys, images = [], {}
        for concept, prompt in (group.probe(c) for c in group.others):
            # the eval split's keys predate the split argument: unchanged, so stored stages stay valid
            key = artifact_key("before", model=model_key, concept=concept, prompt=prompt, eval_seeds=seeds,
                               sampler=self.sampler, images_format=IMAGE_SETS_FORMAT,
                               **({} if split == "eval" else {"split": split}))

            def compute(concept=concept, prompt=prompt):
                meta, tensors = image_sets_artifact(self._sample_sets(model, group, 0, [concept], seeds))
                return {"concept": concept, "prompt": prompt, "eval_seeds": seeds, "split": split, **meta}, tensors

            art = self._ensure("before", key, compute)
            keys.append(key)
            images.update((k, _from_uint8(v)) for k, v in read_image_sets(art).items())
        return keys, images

    def _selection_spec(self, attack_key: str, group: ConceptGroup, seed: int,
                        report_step: int) -> tuple[str, list[str], list[int]]:
        concepts = list(group.targets) + [group.probe(c)[0] for c in group.others]
        seeds = role_seeds("selection", self.eval_images, seed)
        key = artifact_key("selection", attack=attack_key, concepts=concepts, seeds=seeds, step=report_step,
                           sampler=self.sampler, images_format=IMAGE_SETS_FORMAT)
        return key, concepts, seeds

    def _sample_sets(self, model: Backbone, group: ConceptGroup, step: int, concepts: list[str],
                     seeds: list[int]) -> dict[ImageKey, torch.Tensor]:
        probes = dict(group.probe(c) for c in group.others)  # the others are sampled as their probes
        prompts = [probes[c] if c in probes else group.prompt(c) for c in concepts for _ in seeds]
        x = sample(model, prompts, seeds * len(concepts), batch_size=16, **self._sampling)
        return {ImageKey(step, c): _to_uint8(chunk) for c, chunk in zip(concepts, x.split(len(seeds)))}

    def selection(self, attack: str, group: ConceptGroup, seed: int, attack_key: str, model_key: str, model: Backbone,
                  constraints, data: TaskData, variant: Variant) -> tuple[str, dict[ImageKey, torch.Tensor]]:
        """The selection split of a sweep's attack stage: targets and others at its report step on the
        selection seeds. Sampled with the attack when both are new; when the attack is stored already (a run
        without the sweep made it), the attack is replayed to its report step from the same RNG state."""
        key, concepts, seeds = self._selection_spec(attack_key, group, seed, variant.report_step)

        def compute():
            images = self._pending_selection.pop(key, None)
            if images is None:
                torch.manual_seed(int(attack_key[:12], 16))  # the attack stage's own start (Runner._compute)
                plugin = get_attack(attack)()
                plugin.progress = self.progress
                cfg = _seeded(variant.resolved.config, seed)
                attack_data = replace(data, draw_class_images=self.class_images(model_key, model))
                for step, adapted in plugin.adapt(model, group, attack_data, cfg, constraints, list(variant.checkpoints)):
                    if step == variant.report_step:
                        images = self._sample_sets(adapted, group, step, concepts, seeds)
                        break
            meta, tensors = image_sets_artifact(images)
            return {"attack": attack, "attack_key": attack_key, "step": variant.report_step, "seeds": seeds, **meta}, tensors

        art = self._ensure("selection", key, compute)
        return key, {k: _from_uint8(v) for k, v in read_image_sets(art).items()}

    def adapt_alone(self, attack: str, group: ConceptGroup, concept: str, seed: int, model_key: str, model: Backbone,
                    constraints, data: TaskData, data_keys: dict, variant: "Variant"):
        """MRSGR's input on the personalization card (MIMA Eq. 12): ``concept``, one of the group's
        others, adapted by itself on ``model`` with its own photos and identifier, and generated at
        the reporting step. Keyed by the model, not the group, so the undefended model's adaptation of
        a concept is computed once for every group that scores it."""
        cls = get_attack(attack)
        cfg = _seeded(variant.resolved.config, seed)
        alone = group.alone(concept)
        prompt = alone.prompt(concept)
        eval_seeds = role_seeds("eval", self.eval_images, seed)
        key = artifact_key("attack-alone", model=model_key, attack=attack, version=cls.version, source=source_hash(cls),
                           config=_config_dict(cfg),
                           concept=concept, prompt=prompt, data=data_keys["attack_of"][concept], seed=seed,
                           step=variant.report_step, eval_seeds=eval_seeds, sampler=self.sampler,
                           frozen=sorted(constraints.frozen), images_format=IMAGE_SETS_FORMAT)

        def compute():
            plugin = cls()
            plugin.progress = self.progress
            images = {}
            single = TaskData(attack={concept: data.attack[concept]},
                              draw_class_images=self.class_images(model_key, model))
            for step, adapted in plugin.adapt(model, alone, single, cfg, constraints, [variant.report_step]):
                images.update(self._sample_sets(adapted, alone, step, [concept], eval_seeds))
            meta, tensors = image_sets_artifact(images)
            return {"attack": attack, "concept": concept, "eval_seeds": eval_seeds, **meta}, tensors

        art = self._ensure("attack-alone", key, compute)
        return key, {k: _from_uint8(v) for k, v in read_image_sets(art).items()}

    def score(self, attack_key: str, images: dict[ImageKey, torch.Tensor], references: dict, ref_keys: list[str],
              training: dict[str, ConceptImages] | None = None, training_keys: list[str] = (),
              baselines: bool = False) -> list[dict]:
        """Per concept and step: similarity to the references (C, D, L), the judge's top-1 accuracy and, for
        concepts with ``training`` images (the attack split), the mean distance of a generation to its nearest
        training image (``nn/L``, ``nn/D``). ``baselines`` (the no-defense cell, so once per concept) adds the
        references' own nearest distance (``nn-ref/L``, ``nn-ref/D``, step -1: no model drew them)."""
        from immunobench.metrics.scores import (
            MEMORIZATION_ROLES, nearest_distance, nearest_distances, set_similarity, top1_accuracy,
        )

        training = training or {}
        key = artifact_key("score", attack=attack_key, references=ref_keys, judges=self.judge_versions,
                           training=list(training_keys), baselines=baselines)

        def compute():
            rows = []
            for (step, concept), x in images.items():
                for role in SIMILARITY_ROLES if concept in references else ():  # a probe has no references
                    rows.append({"concept": concept, "step": step, "metric": f"sim/{role}",
                                 "value": set_similarity(self.judges[role], references[concept], x)})
                acc = top1_accuracy(self.judges["acc"], x, concept)
                if acc is not None:
                    rows.append({"concept": concept, "step": step, "metric": "acc", "value": acc})
            for concept, train in training.items():
                # every checkpoint in one call: the judge embeds the training images once, not once per step
                keys = [k for k in images if k.concept == concept]
                if not keys:
                    continue
                for role in MEMORIZATION_ROLES:
                    nearest = nearest_distances(self.judges[role], torch.cat([images[k] for k in keys]), train.images)
                    rows += [{"concept": concept, "step": k.step, "metric": f"nn/{role}", "value": float(d.mean())}
                             for k, d in zip(keys, nearest.split([len(images[k]) for k in keys]))]
            if baselines:
                rows += [{"concept": c, "step": -1, "metric": f"nn-ref/{role}",
                          "value": nearest_distance(self.judges[role], references[c], train.images)}
                         for c, train in training.items() for role in MEMORIZATION_ROLES]
            return {"rows": rows}, {}

        return self._ensure("score", key, compute).meta["rows"]

    def paired(self, key_with: str, images_with: dict[ImageKey, torch.Tensor], key_without: str,
               images_without: dict[ImageKey, torch.Tensor], concepts=None, step: int | None = None) -> list[dict]:
        """Paired similarity M(x^T, x^A) per scored concept (``concepts``; default all) at the reporting
        step (``step``: a sweep point's budget; MRSGR's input)."""
        from immunobench.metrics.scores import paired_similarity

        key = artifact_key("paired", with_defense=key_with, without=key_without, judges=self.judge_versions)
        step = self.report_step if step is None else step

        def compute():
            rows = []
            for image_key, x in images_with.items():
                if image_key.step != step or image_key not in images_without or (
                        concepts is not None and image_key.concept not in concepts):
                    continue
                for role in SIMILARITY_ROLES:
                    rows.append({"concept": image_key.concept, "step": step, "metric": f"paired/{role}",
                                 "value": paired_similarity(self.judges[role], x, images_without[image_key])})
            return {"rows": rows}, {}

        return self._ensure("score", key, compute).meta["rows"]

    # --- the grid --------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the model and the judges (the plugin configs were checked when the runner was made)."""
        cfg = self.cfg
        self.model = load_backbone(cfg.model, device=cfg.device, allow_pickle=cfg.allow_pickle)
        # every key descends from this one: a store shared by CPU and GPU machines never mixes their artifacts
        self.environment = key_environment(self.model, cfg.device)
        self.model_root = artifact_key("backbone", fingerprint=self.model.fingerprint, **self.environment)
        self._sampling = {"steps": cfg.sample_steps or self.model.spec.sample_steps,
                          "guidance_scale": self.model.spec.guidance_scale}
        self.sampler = {"sampler": "ddim", **self._sampling, "resolution": self.model.resolution}
        from .captions import all_card_names, generic_captions, scored_names

        self.captions, self.captions_source = generic_captions(
            self.model.spec, all_card_names() | scored_names([self.card]))
        self.metric_family = cfg.judges or self.model.spec.metric_family
        names = judges_for(self.metric_family)
        self.judges = {role: get_metric(names[role])(device=cfg.device) for role in (*SIMILARITY_ROLES, "acc")}
        self.judge_versions = {role: f"{names[role]}@{get_metric(names[role]).version}+{source_hash(get_metric(names[role]))}"
                               for role in self.judges}

    def run(self) -> Path:
        started = time.time()
        cfg = self.cfg
        with _cpu_threads(1 if cfg.device.startswith("cpu") else None):
            self.prepare()  # the model loads (or fails to) before the store or --out is touched
            removed = self.store.clean_temporary()
            if removed:
                self.log(f"store: removed {removed} unfinished artifact(s) of an interrupted run")
            run_dir = self.run_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            cells = len(self.groups) * len(cfg.seeds) * self._variant_count() * len(self.defenses)
            attacks = f"{len(self.attacks)} attack(s)" + (f" in {self._variant_count()} sweep point(s)" if self.sweeping else "")
            self.log(f"run {run_dir}: task {cfg.task}, {len(self.groups)} group(s) × {len(self.defenses)} defense(s) "
                     f"{self.defenses} × {attacks} × {len(cfg.seeds)} seed(s) = {cells} cells; "
                     f"store {self.store.root}")
            self._compute_in_workers()
            # the grid's immunize/attack/score stages; images and start models show their own bars
            phase = time.time()
            self._stage_bar = self.progress.task("grid stages", total=self._count_stages())
            rows = self._walk()
            self._stage_bar.close()
            self.phases["walk"] = round(time.time() - phase, 1)
        from .leaderboard.results import derive_scores

        results = _derive_by_variant(rows, self.card, derive_scores)
        self._write(run_dir, results, time.time() - started)
        return run_dir

    def _walk(self) -> list[dict]:
        """One pass over the grid in its order: computes what is missing (or, planning, lists it) → rows."""
        cfg = self.cfg
        rows: list[dict] = []
        for group_name in self.groups:
            group = self.card.group(group_name)
            for seed in cfg.seeds:
                try:
                    start_key, start = self.start_model(group)
                    data, data_keys = self.task_data(group, seed)
                except (UserError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # noqa: BLE001 — recorded, the grid goes on
                    self._fail(group_name, "*", "*", seed, "data/start", exc)
                    continue
                for attack, variant in ((a, v) for a in self.attacks for v in self.variants[a]):
                    baseline, name = None, variant.cell_name(attack)
                    for defense in self.defenses:
                        failed = self._failed.get((group_name, defense, name, seed))
                        if failed is not None:  # a worker's failure, recorded as it happened
                            self._record_failure(failed)
                            continue
                        try:
                            mkey, akey, images, cell_rows, alone_keys = self.cell(group, seed, attack, defense, start_key,
                                                                                  start, data, data_keys, variant)
                            images_key = artifact_key("cell-images", attack=akey, alone=alone_keys) if alone_keys else akey
                            if defense == "none":
                                baseline = (images_key, images)
                            elif baseline is not None and self._plan is None:
                                cell_rows = cell_rows + self.paired(images_key, images, *baseline, concepts=group.scored,
                                                                    step=variant.report_step)
                        except _Missing as missing:
                            # the model's own job first (its immunization, its others before any attack):
                            # cells of several attacks share them
                            if missing.args[0] in ("immunize", "before"):
                                self._plan.immunizations[(group_name, seed, defense_plugin(defense))] = None
                            base = (group_name, seed, attack, defense_plugin(defense), variant.label)
                            if base not in self._plan.cells:  # a twin row runs in its base row's job
                                self._plan.cells.append((group_name, seed, attack, defense, variant.label))
                            continue
                        except (UserError, KeyboardInterrupt):
                            raise
                        except Exception as exc:  # noqa: BLE001
                            self._fail(group_name, defense, name, seed, "cell", exc)
                            continue
                        if self._plan is not None:
                            continue
                        self.cells.append({"group": group_name, "defense": defense, "attack": attack,
                                           "attack_config": variant.label, "seed": seed,
                                           "targets": list(group.targets), "model_key": mkey, "attack_key": akey,
                                           "frozen_tensors": len(self.store.get(mkey).meta.get("frozen", []))
                                           if defense != "none" and not defense.endswith(UNCONSTRAINED)
                                           and self.store.has(mkey) else 0,
                                           **({"alone_keys": alone_keys} if alone_keys else {}),
                                           **({"selection_key": self._selection_keys[akey]} if self.sweeping else {}),
                                           **({"selection_before_keys": self._selection_before_keys[akey]}
                                              if akey in self._selection_before_keys else {}),
                                           "before_keys": self._before_keys[akey],
                                           "references": dict(zip(group.scored, data_keys["references"])),
                                           # what each stage cost when it was computed (also for reused ones)
                                           "cost": {stage: self.store.get(k).meta.get("cost")
                                                    for stage, k in (("start", start_key), ("immunize", mkey),
                                                                     ("attack", akey))
                                                    if self.store.has(k) and not (stage == "immunize" and k == start_key)}
                                                 # the befores are shared by the model's attacks: each cell shows
                                                 # what it used
                                                 | {stage: _summed_cost([self.store.get(k).meta.get("cost") for k in keys])
                                                    for stage, keys in (("attack-alone", alone_keys),
                                                                        ("before", self._before_keys[akey]),
                                                                        ("before-selection",
                                                                         self._selection_before_keys.get(akey, [])))
                                                    if keys}})
                        rows += [{"task": cfg.task, "group": group_name, "defense": defense, "attack": attack,
                                  "attack_config": variant.label, "seed": seed, "split": "eval", **r} for r in cell_rows]
        return rows

    def cell(self, group: ConceptGroup, seed: int, attack: str, defense: str, start_key: str, start: Backbone,
             data: TaskData, data_keys: dict, variant: "Variant | None" = None) -> tuple[str, str, dict, list[dict], list[str]]:
        """Immunize, attack, score: one cell but its paired score (which needs the no-defense cell). In a sweep
        the selection split's scores follow, marked ``split: selection``.

        On the personalization card the cell also adapts each of the group's others alone
        (``adapt_alone``); their generations join the cell's images (the paired scores' input) and
        their keys are returned last."""
        variant = variant or self.variants[attack][0]
        mkey, model, constraints = self.immunize(defense, group, seed, start_key, start, data, data_keys)
        attacked_key = _attacked_key(start_key, start, mkey, model)
        akey, images = self.attack(attack, group, seed, attacked_key, model, constraints, data, data_keys, variant)
        rows = self.score(akey, images, data.references, data_keys["references"], data.attack, data_keys["attack"],
                          baselines=defense == "none")
        if self.sweeping:
            skey, selected = self.selection(attack, group, seed, akey, attacked_key, model, constraints, data, variant)
            self._selection_keys[akey] = skey
            rows = rows + [{**r, "split": "selection"}
                           for r in self.score(skey, selected, data.references, data_keys["references"])]
            if variant.label == DEFAULT_VARIANT:  # the others before the attack: once per cell, not per point
                bkeys, before = self.before(group, seed, attacked_key, model, split="selection")
                self._selection_before_keys[akey] = bkeys
                rows = rows + [{**r, "split": "selection"} for r in self.score(
                    artifact_key("before-set", before=bkeys), before, data.references, data_keys["references"])]
        alone_keys = []
        if self.card.kind == "personalization":
            for other in group.others:
                key, alone = self.adapt_alone(attack, group, other, seed, attacked_key, model, constraints, data, data_keys,
                                              variant)
                ref_key = data_keys["references"][list(group.scored).index(other)]
                rows = rows + self.score(key, alone, {other: data.references[other]}, [ref_key])
                images = {**images, **alone}
                alone_keys.append(key)
        return mkey, akey, images, rows, alone_keys

    def run_job(self, job: tuple) -> None:
        """A worker's unit of work (see ``immunobench.parallel``): one image set, start model, immunization
        (before the cells that share it, so workers do not compute it twice) or cell."""
        kind, *args = job
        if kind == "images":
            self.images(*args)
        elif kind == "start":
            self.start_model(self.card.group(args[0]))
        elif kind == "immunize":
            group_name, seed, defense = args
            group = self.card.group(group_name)
            start_key, start = self.start_model(group)
            data, data_keys = self.task_data(group, seed)
            mkey, model, _ = self.immunize(defense, group, seed, start_key, start, data, data_keys)
            attacked_key = _attacked_key(start_key, start, mkey, model)
            # here, once, rather than in whichever of the model's cells reaches it first
            if any(0 in v.checkpoints for variants in self.variants.values() for v in variants):
                self.before(group, seed, attacked_key, model)
            if self.sweeping:
                self.before(group, seed, attacked_key, model, split="selection")
        elif kind == "cell":
            group_name, seed, attack, defense, label = args
            group = self.card.group(group_name)
            start_key, start = self.start_model(group)
            data, data_keys = self.task_data(group, seed)
            # the row attacked without the constraint follows in this job: it shares the immunized model
            rows = [defense] + ([defense + UNCONSTRAINED] if defense + UNCONSTRAINED in self.defenses else [])
            for row in rows:
                self.cell(group, seed, attack, row, start_key, start, data, data_keys, self._variant(attack, label))
        else:
            raise ValueError(f"unknown job {kind!r}")

    def _compute_in_workers(self) -> None:
        """Plans the missing stages and computes them in worker processes (``immunobench.parallel``)."""
        from concurrent.futures.process import BrokenProcessPool

        from . import parallel
        from .plugins import loaded_plugin_files

        self._plan = _Plan()
        started = time.time()
        try:
            self._walk()
            plan = self._plan
        finally:
            self._plan = None
            self.stats["cached"], self.keys = {}, {}  # the final walk counts them, once
        self.phases["plan"] = round(time.time() - started, 1)
        jobs = len(plan.images) + len(plan.starts) + len(plan.immunizations) + len(plan.cells)
        workers = parallel.worker_count(self.cfg.workers, self.cfg.device, jobs)
        on_ray = self.cfg.executor == "ray"
        portable, why = self._portable_plugins()
        if jobs == 0 or (workers <= 1 and not on_ray) or not portable:
            if jobs and (workers > 1 or on_ray):
                self.log(f"computing in this process: {why}")
            return
        where = "Ray tasks" if on_ray else f"{workers} worker processes"
        self.log(f"computing {len(plan.images)} image set(s), {len(plan.starts)} start model(s), "
                 f"{len(plan.immunizations)} model(s) to immunize or draw before the attack, and {len(plan.cells)} cell(s) "
                 f"in {where}, one thread each")
        started = time.time()
        def weight(cell) -> int:  # bigger groups, longer budgets and immunized cells first, for a short tail
            group, checkpoints = self.card.groups[cell[0]], self._variant(cell[2], cell[4]).checkpoints
            stages = max(checkpoints) + len(checkpoints) * 20  # attack steps + sampling, roughly
            return stages * len(group) + (0 if cell[3] == "none" else stages * len(group))

        # the image sets and start models come first: every immunization and cell reads them
        phases = [("sample images", [("images", *job) for job in plan.images.values()],
                   [job[2] for job in plan.images.values()]),
                  ("start models", [("start", name) for name in plan.starts.values()], [1] * len(plan.starts)),
                  ("immunize", [("immunize", *job) for job in plan.immunizations], [1] * len(plan.immunizations)),
                  ("cells", [("cell", *c) for c in plan.cells], [weight(c) for c in plan.cells])]

        def collect(result: dict) -> None:
            self._by_workers.update(result["keys"])
            for stage, done in result["computed"].items():
                self._count_computed(stage, done)
            failure, job = result["failure"], result["job"]
            if failure and job[0] == "cell":  # a failed image set or start model is retried by the walk
                group_name, seed, attack, defense, label = job[1:]
                name = self._variant(attack, label).cell_name(attack)
                self._failed[(group_name, defense, name, seed)] = {
                    "group": group_name, "defense": defense, "attack": name, "seed": seed, "stage": "cell", **failure}

        files, modules = list(loaded_plugin_files().values()), self._plugin_modules()
        try:
            if on_ray:
                def needs(job: tuple) -> list[tuple]:  # a cell waits for its immunization, if that is computed too
                    return [("immunize", job[1], job[2], defense_plugin(job[4]))] if job[0] == "cell" else []

                parallel.run_jobs_ray(Runner, portable_config(self.cfg, self.store), phases, workers, files, modules,
                                      self.progress, collect, needs=needs, shared_phases=2, log=self.log)
            else:
                parallel.run_jobs(Runner, self.cfg, phases, workers, files, modules, self.progress, collect)
        except BrokenProcessPool as exc:
            self.log(f"a worker process died ({exc}); computing what is left in this process")
        self.phases["workers"] = round(time.time() - started, 1)
        self.workers = workers

    def _plugin_modules(self) -> list[str]:
        """Modules a worker must import to find this run's plugins (built-ins and files load anyway)."""
        from .plugins import loaded_plugin_files

        files = set(loaded_plugin_files())
        modules = {cls.__module__ for _, cls in self._plugins()}
        return sorted(m for m in modules if m not in files and m.split(".")[0] != "immunobench")

    def _portable_plugins(self) -> tuple[bool, str]:
        """Whether a fresh process can import every plugin of this run (not one defined in a function)."""
        for name, cls in self._plugins():
            if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
                return False, f"plugin {name!r} is defined where a worker process cannot import it"
        return True, ""

    def _plugins(self) -> list[tuple[str, type]]:
        start = self.card.start_model.defense
        defenses = dict.fromkeys(map(defense_plugin, self.defenses))
        return ([(d, get_defense(d)) for d in defenses] + [(a, get_attack(a)) for a in self.attacks]
                + ([(start, get_defense(start))] if start else []))

    def _count_stages(self) -> int:
        # none: attack + score; every other defense: immunize + attack + score + paired score; a sweep scores
        # each cell's selection split too; personalization: each other concept's attack-alone + score in every cell
        total = 0
        for g in self.groups:
            alone = 2 * len(self.card.group(g).others) if self.card.kind == "personalization" else 0
            total += 2 + alone + (4 + alone) * (len(self.defenses) - 1) + (len(self.defenses) if self.sweeping else 0)
        return total * len(self.cfg.seeds) * self._variant_count()

    def _sweep_manifest(self) -> dict:
        """What the sweep was, each point's config and budget, ε and the selection seeds."""
        return {
            "spec": {a: {f: list(v) for f, v in fields_.items()} for a, fields_ in self.cfg.attack_sweep.items()},
            "variants": {a: [{"label": v.label, "swept": v.swept, "report_step": v.report_step,
                              "checkpoints": list(v.checkpoints), **v.resolved.manifest()} for v in variants]
                         for a, variants in self.variants.items()},
            "epsilon": self.card.worst_case.epsilon,
            "selection_seeds": {str(s): [role_seeds("selection", self.eval_images, s)[i] for i in (0, -1)]
                                for s in self.cfg.seeds},
            "eval_seeds": {str(s): [role_seeds("eval", self.eval_images, s)[i] for i in (0, -1)]
                           for s in self.cfg.seeds},
        }

    def _variant_count(self) -> int:
        return sum(len(v) for v in self.variants.values())

    def _fail(self, group, defense, attack, seed, stage, exc: BaseException) -> None:
        if self._plan is not None:  # planning: the final walk meets it again and records it
            return
        self._record_failure({"group": group, "defense": defense, "attack": attack, "seed": seed, "stage": stage,
                              **describe_failure(exc)})

    def failure_summary(self) -> str:
        """One line: how many of the grid's cells failed and why (the commonest reasons first)."""
        from collections import Counter

        per_attack_seed = self._variant_count() * len(self.defenses)  # a failed data/start stage fails them all
        reasons = Counter()
        for f in self.failures:
            reasons[f["reason"]] += per_attack_seed if f["defense"] == "*" else 1
        total = len(self.groups) * len(self.cfg.seeds) * per_attack_seed
        why = "; ".join(f"{reason} ({n} cell{'s' * (n > 1)})" for reason, n in reasons.most_common(2))
        if len(reasons) > 2:
            why += f"; and {len(reasons) - 2} other reason(s)"
        failed = sum(reasons.values())
        rest = "the rest are in the leaderboard; " if failed < total else ""
        return f"{failed} of {total} cells failed: {why}. {rest}each failure's traceback is in manifest.json (failures)"

    def _record_failure(self, failure: dict) -> None:
        self.failures.append(failure)
        self.log(f"cell {failure['group']}/{failure['defense']}/{failure['attack']}/seed {failure['seed']} failed "
                 f"({failure['stage']}): {failure['reason']}; the grid goes on")

    def _write(self, run_dir: Path, results, seconds: float) -> None:
        from .leaderboard.report import render_report

        _write_results(results, run_dir / "results.parquet")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "command": " ".join(sys.argv),
            "run": _config_dict(self.cfg),
            "resolved": {
                "kind": self.card.kind, "groups": self.groups, "defenses": self.defenses, "attacks": self.attacks,
                "checkpoints": self.checkpoints, "report_step": self.report_step,
                "eval_images": self.eval_images, "seeds": list(self.cfg.seeds),
                **({"attack_sweep": self._sweep_manifest()} if self.sweeping else {}),
                # per plugin: the config in force, the paper default, the presets applied and each value's source
                "plugins": {name: {"version": cls.version, "source_sha256": source_hash(cls),
                                   "file": _plugin_file(cls), **self.configs[name].manifest()}
                            for name, cls in self._plugins()},
                "judges": {role: {"judge": self.judge_versions[role], **self.judges[role].describe()}
                           for role in self.judges},
                "sampler": self.sampler,
                "metric_family": self.metric_family,  # whose judges' labels the leaderboard shows
                "others": {g: list(self.card.group(g).others) for g in self.groups},
                "start_model": {**self.card.start_model.model_dump(),
                                "preserve_prompts": {g: self.card.group(g).start_preserve_prompts()
                                                     for g in self.groups}},
                # what every defense received (data.DefenseData): never the attack split, references or others
                "defense_view": {
                    "defense_images": self.card.data.defense_images,
                    "regularization": {"prompt": self.card.regularization.prompt, "images": self.card.regularization.images},
                    "captions": {"source": self.captions_source, "count": len(self.captions),
                                 "first": self.captions[:5]},
                },
            },
            "groups": {g: self.card.groups[g] for g in self.groups},
            "cells": self.cells,
            "task_card": {"name": self.card.task, "path": self.card.path, "hash": self.card_hash,
                          "version": self.card.metadata.version},
            "model": self.model.provenance(),
            "data": {"image_artifacts": sorted(set(self.keys.get("images", [])))},
            "artifacts": {stage: sorted(set(keys)) for stage, keys in self.keys.items()},
            "store": str(self.store.root),
            "store_keys_version": KEYS_VERSION,
            "store_keys_environment": self.environment,
            "code": code_version(),
            "packages": package_versions(),
            "host": {"platform": platform.platform(), "python": platform.python_version(),
                     "cpus": os.cpu_count(), "device": self.cfg.device, "workers": self.workers,
                     "executor": self.cfg.executor, **({"ray_address": self.cfg.address} if self.cfg.address else {}),
                     "torch_threads": 1 if self.cfg.device.startswith("cpu") else torch.get_num_threads()},
            "timings": {"total_seconds": round(seconds, 1), "phases": self.phases, "computed": self.stats["computed"],
                        "cached": self.stats["cached"]},
            "failures": self.failures,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if self.sweeping:
            from .leaderboard.worst_case import sweep_choices

            manifest["worst_case"] = sweep_choices(results, manifest).to_dict(orient="records")
        (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        render_report(run_dir, store=self.store)


def _attacked_key(start_key: str, start: Backbone, model_key: str, model: Backbone) -> str:
    """The key attacks are keyed by: the weights attacked. On an unchanged release they are the start
    model's (its frozen set is in the attack's key), so an unconstrained twin reuses the undefended
    cell's attack."""
    return start_key if model is start else model_key


def role_seeds(role: str, count: int, run_seed: int) -> list[int]:
    """The initial-noise seeds of ``count`` images of one role (``SEED_OFFSETS``) under run seed ``run_seed``."""
    return [run_seed * SEED_STRIDE + SEED_OFFSETS[role] + i for i in range(count)]


def _expand_all(defenses) -> list[str]:
    """``all`` stands for every registered defense (built-in and plugins, by name) not named beside it."""
    from .plugins import DEFENSES

    named = list(dict.fromkeys(defenses))
    if "all" not in named:
        return named
    i = named.index("all")
    return named[:i] + [d for d in DEFENSES.names() if d not in named] + named[i + 1:]


def _summed_cost(costs: list[dict | None]) -> dict:
    """Several stages' costs as one: seconds summed, the peak of the peaks."""
    costs = [c for c in costs if c]
    return {"count": len(costs), "seconds": round(sum(c.get("seconds", 0) for c in costs), 2),
            "peak_rss_mb": max((c.get("peak_rss_mb", 0) for c in costs), default=0),
            **{k: sum(c.get(k, 0) for c in costs) for k in ("unet_calls", "unet_images")}}


def _plugin_file(cls: type) -> str:
    """The plugin's file, relative to the repository for built-ins (absolute paths differ per machine)."""
    import inspect

    try:
        file = Path(inspect.getsourcefile(cls) or "")
    except TypeError:
        return ""
    return str(file.resolve().relative_to(PLUGIN_ROOT)) if file.resolve().is_relative_to(PLUGIN_ROOT) else str(file)


def _derive_by_variant(rows: list[dict], card: TaskCard, derive: Callable) -> "pd.DataFrame":
    """``derive`` (``leaderboard.results.derive_scores``) per sweep point and split, each part carrying its
    ``attack_config`` and ``split`` columns (after ``attack`` and ``seed``)."""
    import pandas as pd

    parts: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        parts.setdefault((r["attack_config"], r["split"]), []).append(r)
    frames = [derive(part, card).assign(attack_config=label, split=split) for (label, split), part in parts.items()]
    if not frames:
        frames = [derive([], card).assign(attack_config=pd.Series(dtype=str), split=pd.Series(dtype=str))]
    out = pd.concat(frames, ignore_index=True)
    columns = [c for c in out.columns if c not in ("attack_config", "split")]
    columns.insert(columns.index("attack") + 1, "attack_config")
    columns.insert(columns.index("seed") + 1, "split")
    return out[columns]


def _effective_card(card: TaskCard, cfg: RunConfig) -> TaskCard:
    """The card with the run's --checkpoints, --report-step and --eval-images in force, validated by the
    card's own rules: an override is accepted exactly when a card file saying the same would be."""
    data, given = card.model_dump(), []
    if cfg.checkpoints:
        data["checkpoints"] = list(cfg.checkpoints)
        given.append(f"--checkpoints {' '.join(map(str, cfg.checkpoints))}")
    if cfg.report_step is not None:
        data["report_step"] = cfg.report_step
        given.append(f"--report-step {cfg.report_step}")
    if cfg.eval_images:
        data["data"]["eval_images"] = cfg.eval_images
        given.append(f"--eval-images {cfg.eval_images}")
    if not given:
        return card
    try:
        return TaskCard(**data, path=card.path)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"{' '.join(given)}: {msg if msg.startswith(where) else f'{where}: {msg}'} "
                        f"(task {card.task} has checkpoints {card.checkpoints}, report step {card.report_step}; "
                        "overrides follow the card's rules)") from None


def run_folder(out: str | Path, name: str, default_prefix: str) -> Path:
    """``out/name``, by default ``out/<prefix>-<date>-<time>``: always one folder inside a writable ``out``."""
    folder = name or f"{default_prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    if folder in (".", "..") or Path(folder).name != folder or "/" in folder or "\\" in folder:
        if not name:
            raise UserError(f"{default_prefix!r} cannot start a run folder's name (it holds '/' or '..'); pass --name")
        raise UserError(f"--name {name!r}: must be one folder name, without '/' or '..'; the run folder goes "
                        "inside --out (choose that with --out)")
    check_writable(out, "--out")
    if (Path(out) / folder).is_file():
        raise UserError(f"--out {out}: {Path(out) / folder} is a file, not a run folder; pass another --name")
    return Path(out) / folder


def _write_results(results, path: Path) -> None:
    """``results.parquet`` with the schema version in the file's key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(results, preserve_index=False)
    meta = {**(table.schema.metadata or {}), b"immunobench.schema_version": str(SCHEMA_VERSION).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)


class _cpu_threads:
    """torch's intra-op threads set for a block and restored after (None: unchanged)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def portable_config(cfg: RunConfig, store: Store) -> RunConfig:
    """``cfg`` with its local paths absolute, for workers that may not share this process's directory."""
    def absolute(value: str) -> str:
        return str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value

    return replace(cfg, task=absolute(cfg.task), model=absolute(cfg.model), out=absolute(cfg.out),
                   include_paths=tuple(map(absolute, cfg.include_paths)),
                   store=cfg.store if store.remote else str(Path(store.root).resolve()))


def key_environment(model: Backbone, device: str) -> dict:
    """What, beside the weights, decides a stage's floats: device type, dtype, torch and diffusers versions."""
    import diffusers

    return {"device": torch.device(device).type, "dtype": str(next(model.unet.parameters()).dtype).removeprefix("torch."),
            "torch": torch.__version__, "diffusers": diffusers.__version__}


# what a checkout may change without changing the code that ran: measured results and prose
NOT_CODE = (":(exclude)benchmarks/results", ":(exclude)docs", ":(exclude)*.md")


def code_version(root: Path | None = None) -> dict:
    """The package version and, in a git checkout, its commit and whether tracked code differs from it
    (``dirty``; an edited result file or document does not count)."""
    import subprocess

    from . import __version__

    root = root or Path(__file__).resolve().parent.parent
    info = {"immunobench": __version__}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                    "--", ".", *NOT_CODE], capture_output=True, text=True, timeout=5)
            info.update(git=head.stdout.strip(), dirty=bool(dirty.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "torchvision", "diffusers", "transformers", "peft", "open_clip_torch", "timm", "lpips",
                "numpy", "pandas", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def list_runs(out: str | Path = "runs") -> list[dict]:
    runs = []
    for manifest in sorted(Path(out).glob("*/manifest.json")):
        m = read_manifest(manifest.parent)
        runs.append({"run": manifest.parent.name, "task": m["run"]["task"], "defenses": m["resolved"]["defenses"],
                     "groups": m["resolved"]["groups"], "seeds": m["resolved"]["seeds"], "model": m["model"]["name"],
                     "date": m["date"], "seconds": m["timings"]["total_seconds"], "failures": len(m["failures"])})
    return runs


def read_manifest(run_dir: Path) -> dict:
    """A run folder's manifest.json, or a ``UserError`` naming the folder if it is not one."""
    path = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"{run_dir}: not a run folder ({path.name}: {exc.strerror}); "
                        "list runs with `immunobench runs --out FOLDER`") from None
    except ValueError as exc:
        raise UserError(f"{path}: corrupt manifest (not JSON: {exc}); rerun the run to rewrite it, "
                        "or remove the folder") from None
    missing = [k for k in ("run", "resolved", "model", "timings", "failures", "date")
               if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise UserError(f"{path}: corrupt manifest (no {', '.join(missing)}); rerun the run to rewrite it, "
                        "or remove the folder")
    return manifest


__all__ = ["RunConfig", "Runner", "list_runs", "canonical"]
