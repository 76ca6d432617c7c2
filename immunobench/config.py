"""Plugin configs: one validated mechanism for every defense's, attack's and metric's ``Config``.

A ``Config`` is a plain frozen stdlib dataclass whose defaults are the paper's; each field has a type
(constraints declared with ``Annotated``) and help text in ``metadata``::

    @dataclass(frozen=True)
    class Config:
        steps: Annotated[int, Field(ge=0)] = field(default=300, metadata={"help": "outer steps (App. D)"})
        rows: Literal["concept", "prompt"] = field(default="concept", metadata={"help": "rows of C"})

pydantic validates every value by its field's annotation (ranges, ``Literal`` choices), and a string
from the command line is coerced by that type (``"100"`` → 100). A plugin's ``presets`` adjust the
paper defaults per task kind, backbone or ``"backbone/kind"``; they are checked when the plugin
registers. ``resolve`` applies them in that order, then the user's overrides, and records where each
value in force came from (the run manifest and ``immunobench show`` print it).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Annotated, Callable, Iterable, Literal, Union

import yaml
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

from .errors import ConfigError, PluginError

PAPER_DEFAULT = "paper default"
OVERRIDE = "override"


@dataclass(frozen=True)
class Option:
    """One field of a plugin's Config: its resolved type, paper default and help."""

    name: str
    type: Any
    default: Any
    help: str

    @property
    def allowed(self) -> str:
        return describe_type(self.type)


def task_kinds() -> tuple[str, ...]:
    """The task kinds a preset key may name (the task card's ``kind`` choices)."""
    from .cards import TaskCard

    return typing.get_args(TaskCard.model_fields["kind"].annotation)


@functools.lru_cache(maxsize=None)
def options(config_cls: type) -> tuple[Option, ...]:
    """The fields of ``config_cls`` (none when it is not a dataclass: the plugin takes no options)."""
    if not dataclasses.is_dataclass(config_cls):
        return ()
    try:
        hints = typing.get_type_hints(config_cls, include_extras=True)
    except Exception as exc:  # an annotation naming something the Config's module does not define
        raise PluginError(f"{config_cls.__qualname__}: a field's type cannot be resolved ({exc}); "
                          "define the names its annotations use at module level") from exc
    out = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise PluginError(f"{config_cls.__qualname__}.{f.name} has no default; every Config field needs "
                              "one (the paper's value)")
        out.append(Option(f.name, hints[f.name], default, f.metadata.get("help", "")))
    return tuple(out)


def _adapter(tp: Any) -> TypeAdapter:
    try:
        return _cached_adapter(tp)
    except TypeError:  # an unhashable annotation: build it afresh
        return _new_adapter(tp)


def _new_adapter(tp: Any) -> TypeAdapter:
    try:
        return TypeAdapter(tp)
    except PydanticSchemaGenerationError as exc:
        raise PluginError(f"config field type {describe_type(tp)} cannot be validated; use plain types "
                          "(int, float, str, bool, Literal, tuple, None)") from exc


_cached_adapter = functools.lru_cache(maxsize=None)(_new_adapter)


def _coerce(option: Option, value: Any) -> Any:
    """``value`` validated by the option's type; a string is tried first as the YAML scalar it spells
    ("null" → None, "[a, b]" → a list), then as text."""
    candidates = [value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if parsed != value:
            candidates.insert(0, parsed)
    for candidate in candidates:
        try:  # a boolean stays a boolean: strict mode refuses True for an int
            return _adapter(option.type).validate_python(candidate, strict=isinstance(candidate, bool) or None)
        except ValidationError as exc:
            first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    raise _Invalid((f"item {where}: " if where else "") + first["msg"][:1].lower() + first["msg"][1:])


class _Invalid(Exception):
    """A value its field's type refuses; the message says why."""


def validate(config_cls: type, values: dict, plugin: str, where: Callable[[str, Any], str],
             error: type[Exception] = ConfigError) -> dict:
    """``values`` (field → value) checked and coerced by ``config_cls``'s types.

    ``plugin`` names the plugin ("defense mima"), ``where(field, value)`` the value's origin
    ("--set mima.steps=abc"); a bad value raises ``error`` saying what is allowed.
    """
    known = {o.name: o for o in options(config_cls)}
    out = {}
    for name, value in values.items():
        if name not in known:
            if not known:
                raise error(f"{where(name, value)}: {plugin} takes no options")
            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise error(f"{where(name, value)}: {plugin} has no field {name!r}.{hint} "
                        f"Fields: {', '.join(known)}")
        option = known[name]
        try:
            out[name] = _coerce(option, value)
        except PluginError as exc:  # the field's type itself is unusable: the plugin's fault
            raise PluginError(f"{plugin}: Config.{name}: {exc}") from None
        except _Invalid as exc:
            close = difflib.get_close_matches(str(value), _choices(option.type), n=1, cutoff=0.5)
            hint = f". Did you mean {close[0]!r}?" if close else ""
            raise error(f"{where(name, value)}: {exc}{hint}; allowed: {option.allowed} "
                        f"({plugin}, paper default {option.default!r})") from None
    return out


def build(config_cls: type, values: dict, plugin: str, error: type[Exception] = ConfigError) -> Any:
    """A Config instance from validated values; a cross-field check of the class fails as ``error``."""
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise error(f"{plugin}: {exc}") from None


@dataclass(frozen=True)
class Resolved:
    """A plugin's config in force and where each value came from."""

    config: Any
    paper_default: dict
    presets: dict[str, dict]  # the presets applied, in order: key → values
    overrides: dict
    source: dict[str, str]  # field → "paper default", "preset KEY" or "override"

    @property
    def presets_in_force(self) -> list[str]:
        """Preset keys that set at least one value in force (an override can shadow a whole preset)."""
        return [key for key in self.presets if f"preset {key}" in self.source.values()]

    def manifest(self) -> dict:
        in_force = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else {}
        return {"config": in_force, "paper_default": self.paper_default, "presets": self.presets,
                "presets_in_force": self.presets_in_force, "overrides": self.overrides, "source": self.source}


def preset_keys(backbone: str, kind: str) -> tuple[str, ...]:
    """The preset keys that apply to a backbone and task kind, in the order they apply."""
    return (kind, backbone, f"{backbone}/{kind}")


def resolve(plugin_cls: type, plugin: str, backbone: str, kind: str, overrides: dict | None = None,
            origin: Callable[[str, Any], str] | None = None) -> Resolved:
    """The config in force: paper defaults, then presets for the kind, the backbone and both, then
    ``overrides`` (later wins). ``origin(field, value)`` names an override in errors."""
    config_cls = getattr(plugin_cls, "Config", object)
    presets = getattr(plugin_cls, "presets", {}) or {}
    where = origin or (lambda name, value: f"{plugin}: {name}={value!r}")
    applied: dict[str, dict] = {}
    values: dict = {}
    source = {o.name: PAPER_DEFAULT for o in options(config_cls)}
    for key in dict.fromkeys(preset_keys(backbone, kind)):
        if key in presets:
            applied[key] = validate(config_cls, presets[key], plugin,
                                    lambda n, v, key=key: f"{plugin}: preset {key!r}: {n}={v!r}")
            values.update(applied[key])
            source.update({n: f"preset {key}" for n in applied[key]})
    checked = validate(config_cls, overrides or {}, plugin, where)
    values.update(checked)
    source.update({n: OVERRIDE for n in checked})
    return Resolved(build(config_cls, values, plugin), {o.name: o.default for o in options(config_cls)},
                    applied, checked, source)


def check_plugin(plugin: str, plugin_cls: type) -> None:
    """At registration: the Config's fields resolve and their defaults validate, and every preset's
    key is shaped as a task kind, a backbone or "backbone/kind" and its values validate."""
    config_cls = getattr(plugin_cls, "Config", object)
    try:
        fields_ = options(config_cls)
    except PluginError as exc:
        raise PluginError(f"{plugin}: {exc}") from None
    for option in fields_:
        validate(config_cls, {option.name: option.default}, plugin,
                 lambda n, v: f"{plugin}: Config.{n} default {v!r}", error=PluginError)
    presets = getattr(plugin_cls, "presets", {}) or {}
    if not isinstance(presets, dict):
        raise PluginError(f"{plugin}: presets must be a dict of key → {{field: value}}, got {type(presets).__name__}")
    kinds = task_kinds()
    for key, values in presets.items():
        if not isinstance(key, str) or not isinstance(values, dict):
            raise PluginError(f"{plugin}: preset {key!r} must map a string key to a dict of field values")
        backbone, slash, kind = key.rpartition("/")
        if slash and (kind not in kinds or not backbone):
            raise PluginError(f"{plugin}: preset key {key!r} is not 'backbone/kind'; kinds: {', '.join(kinds)}")
        validate(config_cls, values, plugin, lambda n, v, key=key: f"{plugin}: preset {key!r}: {n}={v!r}",
                 error=PluginError)
        build(config_cls, values, f"{plugin}: preset {key!r}", error=PluginError)


def check_preset_backbones(plugin: str, plugin_cls: type, backbones: Iterable[str]) -> None:
    """Every preset key that is no task kind names a registered backbone (run once discovery is done)."""
    backbones, kinds = sorted(backbones), task_kinds()
    for key in getattr(plugin_cls, "presets", {}) or {}:
        backbone = key.rpartition("/")[0] or key
        if key in kinds or backbone in backbones:
            continue
        close = difflib.get_close_matches(backbone, [*backbones, *kinds], n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise PluginError(f"{plugin}: preset key {key!r} names no task kind ({', '.join(kinds)}) and no registered "
                          f"backbone ({', '.join(backbones)}), so it would never apply.{hint}")


def _choices(tp: Any) -> list[str]:
    """The string choices of a ``Literal`` field (inside ``Optional``/``Annotated`` too), for "did you mean"."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return [a for a in typing.get_args(tp) if isinstance(a, str)]
    if origin in (Annotated, Union, types.UnionType):
        return [c for a in typing.get_args(tp) for c in _choices(a)]
    return []


def describe_type(tp: Any) -> str:
    """A field type as a user reads it: ``int >= 0``, ``'concept' | 'prompt'``, ``str or None``."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        bounds = [b for m in meta for b in _bounds(m)]
        return describe_type(base) + (" " + ", ".join(bounds) if bounds else "")
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and origin is None:
        return tp.__name__
    return str(tp).replace("typing.", "")


def _bounds(meta: Any) -> list[str]:
    """">= 0"-style bounds of one ``Annotated`` item (a pydantic ``Field`` or annotated_types)."""
    out = []
    for item in getattr(meta, "metadata", None) or [meta]:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attr, None)
            if bound is not None:
                out.append(f"{op} {bound}")
    return out


__all__ = ["Option", "Resolved", "options", "validate", "resolve", "check_plugin", "check_preset_backbones",
           "describe_type", "task_kinds", "preset_keys", "PAPER_DEFAULT", "OVERRIDE"]
