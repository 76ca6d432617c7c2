"""Name → plugin registries, one per kind (defense, attack, metric, backbone).

Names are the API (timm's ``create_model``): ``get_defense("mima")``. A name claimed twice
is an error, an unknown name lists the known ones and suggests the closest.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable

from .errors import PluginError, UnknownNameError


class Registry:
    """``check(label, obj)``, if given, vets a plugin as it registers (e.g. its config and presets)."""

    def __init__(self, kind: str, base_cls: type | tuple[type, ...] | None = None, needs_version: bool = True,
                 check: Callable[[str, Any], None] | None = None):
        self.kind = kind
        self.base_cls = base_cls
        self.needs_version = needs_version
        self.check = check
        self._entries: dict[str, Any] = {}
        self._origin: dict[str, str] = {}
        self._discover: Callable[[], None] | None = None

    def register(self, name: str, *aliases: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            self._check(name, obj)
            if self.check is not None:
                self.check(f"{self.kind} {name}", obj)
            for key in (name, *aliases):
                self._add(key, obj)
            obj.registered_name = name
            return obj

        return deco

    def _check(self, name: str, obj: Any) -> None:
        if self.base_cls is not None and isinstance(obj, type) and not issubclass(obj, self.base_cls):
            bases = self.base_cls if isinstance(self.base_cls, tuple) else (self.base_cls,)
            raise PluginError(
                f"{self.kind} {name!r}: {obj.__qualname__} must subclass {' or '.join(b.__name__ for b in bases)}"
            )
        version = getattr(obj, "version", None)
        if self.needs_version and (not isinstance(version, str) or not version):
            raise PluginError(
                f"{self.kind} {name!r} ({_where(obj)}) must declare a non-empty `version` string; "
                "it goes into cache keys, so bump it whenever results change"
            )

    def _add(self, key: str, obj: Any) -> None:
        if key in self._entries and self._entries[key] is not obj:
            raise PluginError(
                f"{self.kind} name {key!r} is claimed twice: by {self._origin[key]} and by {_where(obj)}; "
                "rename one of them"
            )
        self._entries[key] = obj
        self._origin[key] = _where(obj)

    def set_discovery(self, discover: Callable[[], None]) -> None:
        self._discover = discover

    def _ensure(self) -> None:
        if self._discover is not None:
            discover, self._discover = self._discover, None
            discover()

    def get(self, name: str) -> Any:
        self._ensure()
        if name not in self._entries:
            known = sorted(self._entries)
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(known) or '(none)'}"
            )
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        self._ensure()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origin[name]

    def __contains__(self, name: str) -> bool:
        self._ensure()
        return name in self._entries


def _where(obj: Any) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"
