"""Plugin seams (Defense, Attack, Similarity), their registries, and plugin loading.

Plugins come from three places, in this order: the built-in folders (``defenses/``,
``attacks/``, ``metrics/``), the entry-point group ``immunobench.plugins`` (each entry point
names a module to import), and files passed with ``--plugin path/to/file.py``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from .config import Resolved, check_plugin, check_preset_backbones, resolve
from .errors import PluginError
from .registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .backbones import Backbone
    from .cards import ConceptGroup
    from .data import DefenseData
    from .snapshot import LoopSnapshot

ENTRY_POINT_GROUP = "immunobench.plugins"
BUILTIN_PACKAGES = ("immunobench.defenses", "immunobench.attacks", "immunobench.metrics")


@dataclass
class Constraints:
    """What an attack must honour, e.g. FreezeAsGuard's frozen tensors (by parameter name)."""

    frozen: frozenset[str] = frozenset()


@dataclass
class Immunized:
    """A defense's output: new UNet/text-encoder tensors (by name) and the attack's constraints."""

    unet: dict[str, "torch.Tensor"] = field(default_factory=dict)
    text_encoder: dict[str, "torch.Tensor"] = field(default_factory=dict)
    constraints: Constraints = field(default_factory=Constraints)
    info: dict[str, Any] = field(default_factory=dict)


class Defense:
    """Immunizes a model against adaptation to a concept group. Register with ``@register_defense``."""

    version: ClassVar[str] = ""
    Config: ClassVar[type] = object
    # Per (backbone, task kind) config overrides: keys "kind", "backbone", "backbone/kind".
    presets: ClassVar[dict[str, dict]] = {}
    needs_regularization: ClassVar[bool] = False  # the runner then generates the card's regularization set
    # publishes frozen tensors (Immunized.constraints): the grid then also attacks it without them, as
    # ``<name>/unconstrained`` (what an attacker who holds the weights does)
    publishes_constraints: ClassVar[bool] = False
    # its release changes no weight (FreezeAsGuard's): the runner then attacks the start model itself, so
    # the unconstrained row reuses the undefended attack; declared for the grid's price
    releases_start_weights: ClassVar[bool] = False
    progress: Any = None  # the runner sets a Progress here; None = quiet
    snapshot: Any = None  # the runner sets a snapshot.LoopSnapshot here: a killed stage resumes mid-way

    def loop_snapshot(self) -> "LoopSnapshot":
        """Where a training loop saves and restores its state (a no-op outside the runner)."""
        from .snapshot import LoopSnapshot

        return self.snapshot or LoopSnapshot()

    def immunize(self, model: "Backbone", data: "DefenseData", cfg: Any) -> Immunized:
        """``data`` is all a defense may see: its targets' defense split and the regularization data."""
        raise NotImplementedError


class Attack:
    """Adapts a (possibly immunized) model to a concept group; yields checkpoints."""

    version: ClassVar[str] = ""
    Config: ClassVar[type] = object
    presets: ClassVar[dict[str, dict]] = {}
    progress: Any = None

    def adapt(
        self,
        model: "Backbone",
        group: "ConceptGroup",
        data: Any,
        cfg: Any,
        constraints: Constraints,
        checkpoints: list[int],
    ) -> Iterator[tuple[int, "Backbone"]]:
        raise NotImplementedError


def configure(plugin_cls: type, backbone: str, kind: str, overrides: dict | None = None):
    """A plugin's validated config: its paper defaults, then its presets for the task kind, the
    backbone and both, then the user's overrides (later wins)."""
    return resolve_config(plugin_cls, backbone, kind, overrides).config


def resolve_config(plugin_cls: type, backbone: str, kind: str, overrides: dict | None = None,
                   origin: Callable[[str, Any], str] | None = None) -> Resolved:
    """``configure``'s config with where each value came from; ``origin(field, value)`` names an
    override in errors (e.g. ``--set mima.steps=abc``)."""
    return resolve(plugin_cls, plugin_label(plugin_cls), backbone, kind, overrides, origin)


class Similarity:
    """Image-set similarity backend: ``pairwise(a, b)`` → |a|×|b| similarities, higher = more alike.

    ``label`` names the metric in tables and plots; ``higher_is_better`` says which way a derived
    score (MSGR, MRSGR) of it improves, so the leaderboard marks the best value by it.
    """

    version: ClassVar[str] = ""
    label: ClassVar[str] = ""  # display name, e.g. "LPIPS (1 − d)"; empty = the registered name
    higher_is_better: ClassVar[bool] = True

    def pairwise(self, a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError


class Classifier:
    """Judge for the accuracy metric: ``logits(images)`` → (N, len(classes)); images in [-1, 1]."""

    version: ClassVar[str] = ""
    classes: tuple[str, ...] = ()

    def logits(self, images: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError


# Which judges a metric family uses: C, D, L similarity backends and the accuracy classifier.
SIMILARITY_ROLES = ("C", "D", "L")  # CLIP, DINO and LPIPS roles of a metric family; "acc" is the classifier
METRIC_FAMILIES = {
    "real": {"C": "clip", "D": "dino", "L": "lpips", "acc": "resnet50"},
    "world": {"C": "clip-world", "D": "dino-world", "L": "lpips-world", "acc": "classifier-world"},
}



def judges_for(family: str) -> dict[str, str]:
    """The metric names (C, D, L, acc) a backbone's ``metric_family`` selects."""
    from .errors import UnknownNameError

    if family not in METRIC_FAMILIES:
        raise UnknownNameError(f"unknown metric family {family!r}; known: {', '.join(METRIC_FAMILIES)}")
    return METRIC_FAMILIES[family]


def similarity_judges(family: str) -> dict[str, type[Similarity]]:
    """Role (C, D, L) → the similarity plugin class that plays it in ``family`` (its label, direction)."""
    names = judges_for(family)
    return {role: get_metric(names[role]) for role in SIMILARITY_ROLES}


def metric_label(cls: type) -> str:
    """How tables and plots name a metric plugin: its ``label``, else its registered name."""
    return getattr(cls, "label", "") or getattr(cls, "registered_name", cls.__name__)


_PRESETS_TO_CHECK: list[tuple[str, type]] = []  # plugins registered before the backbones were all known


def _check_config(label: str, plugin_cls: type) -> None:
    """At registration: the Config and presets validate; preset backbones once discovery is done."""
    check_plugin(label, plugin_cls)
    if _discovery_done:
        check_preset_backbones(label, plugin_cls, BACKBONES.names())
    else:
        _PRESETS_TO_CHECK.append((label, plugin_cls))


UNCONSTRAINED = "/unconstrained"  # the row of a constraint-publishing defense attacked without its constraint


def defense_plugin(row: str) -> str:
    """The plugin behind a defense row of a run: ``freezeasguard/unconstrained`` → ``freezeasguard``."""
    return row.removesuffix(UNCONSTRAINED)


DEFENSES = Registry("defense", Defense, check=_check_config)
ATTACKS = Registry("attack", Attack, check=_check_config)
METRICS = Registry("metric", (Similarity, Classifier), check=_check_config)
BACKBONES = Registry("backbone", needs_version=False)
REGISTRIES = {"defenses": DEFENSES, "attacks": ATTACKS, "metrics": METRICS, "backbones": BACKBONES}

register_defense = DEFENSES.register
register_attack = ATTACKS.register
register_metric = METRICS.register
register_backbone = BACKBONES.register
get_defense = DEFENSES.get
get_attack = ATTACKS.get
get_metric = METRICS.get
get_backbone = BACKBONES.get


def source_hash(plugin_cls: type) -> str:
    """SHA-256 (16 hex digits) of the file that defines ``plugin_cls``, built-in or not. It is part of
    the keys of the plugin's stages and of the manifest, so editing a plugin file invalidates exactly
    its cells ("no-source" for a class without a file, e.g. one defined in an interactive session)."""
    try:
        file = inspect.getsourcefile(plugin_cls)
    except TypeError:
        file = None
    if not file or not Path(file).is_file():
        return "no-source"
    stat = Path(file).stat()
    return _file_hash(str(Path(file).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:  # an edited file is hashed again
    return source_digest(Path(path).read_bytes())


def source_digest(source: bytes) -> str:
    """The SHA-256 (16 hex digits) a plugin's source is known by: in stage keys, manifests and bundles."""
    return hashlib.sha256(source).hexdigest()[:16]


def plugin_label(plugin_cls: type) -> str:
    """"defense mima": the registry kind and name of a plugin class, for messages."""
    kind = next((r.kind for r in (DEFENSES, ATTACKS, METRICS)
                 if isinstance(plugin_cls, type) and issubclass(plugin_cls, r.base_cls)), "plugin")
    return f"{kind} {getattr(plugin_cls, 'registered_name', plugin_cls.__name__)}"


def _discover_all() -> None:
    importlib.import_module("immunobench.backbones")  # registers the named checkpoints
    for package_name in BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                _import_or_explain(f"{package_name}.{info.name}", Path(package.__path__[0]) / f"{info.name}.py")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except PluginError:
            raise
        except Exception as exc:  # a third-party package: say which one and what broke
            raise PluginError(
                f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP} failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def _import_or_explain(module_name: str, path: Path) -> None:
    try:
        importlib.import_module(module_name)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"{path}: failed to import: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


_discovery_started = False
_discovery_done = False


def discover() -> None:
    """Load built-in and entry-point plugins once; every registry lookup triggers it. Then check the
    backbone names of the presets registered so far (later plugins are checked as they register)."""
    global _discovery_started, _discovery_done
    if _discovery_started:
        return
    _discovery_started = True
    _discover_all()
    _discovery_done = True
    while _PRESETS_TO_CHECK:
        check_preset_backbones(*_PRESETS_TO_CHECK.pop(0), BACKBONES.names())


for _registry in REGISTRIES.values():
    _registry.set_discovery(discover)


_LOADED_FILES: dict[str, str] = {}  # module name → file, for worker processes to load again


def loaded_plugin_files() -> dict[str, str]:
    return dict(_LOADED_FILES)


def load_plugin_file(path: str | Path) -> str:
    """Import a user's plugin file so that its ``@register_*`` decorators run; returns the module name.

    A file that registers nothing is refused: a typo'd decorator would otherwise go unnoticed."""
    discover()  # built-ins first, so a clash names both sides
    path = Path(path)
    if not path.is_file():
        raise PluginError(f"--plugin {path}: no such file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"immunobench_plugin_{path.stem.replace('-', '_')}_{digest}"
    if module_name in sys.modules:
        return module_name
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"--plugin {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    registered_before = {kind: registry.names() for kind, registry in REGISTRIES.items()}
    try:
        spec.loader.exec_module(module)
    except PluginError:
        del sys.modules[module_name]
        raise
    except Exception as exc:
        del sys.modules[module_name]
        raise PluginError(f"{path}: failed to import: {_describe(exc)}") from exc
    if all(registry.names() == registered_before[kind] for kind, registry in REGISTRIES.items()):
        del sys.modules[module_name]
        raise PluginError(f"--plugin {path}: registers nothing; decorate its classes with @register_defense, "
                          "@register_attack, @register_metric or @register_backbone from immunobench.plugins")
    _LOADED_FILES[module_name] = str(path.resolve())
    return module_name
