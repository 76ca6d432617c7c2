"""``immunobench check-plugin FILE``: would this plugin file run? Every problem, one line each.

The file is imported in a fresh interpreter (``python -m immunobench.plugin_check FILE``), so its
import-time side effects and registrations cannot leak into the caller, with the ``register_*``
decorators replaced by recorders: one bad class does not hide the next problem. Checked: the file
imports (else file:line of the error), it registers exactly one plugin, that plugin subclasses its
seam and overrides its method with the seam's signature, declares a ``version``, has a Config whose
fields all have defaults that validate and help text, presets that validate, and a free name.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
import traceback
from pathlib import Path

from .errors import PluginError

# the method each seam's plugin must override, with its parameters after self
SIGNATURES = {"defense": ("immunize", ("model", "data", "cfg")),
              "attack": ("adapt", ("model", "group", "data", "cfg", "constraints", "checkpoints"))}


def check_file(path: str | Path) -> tuple[list[str], list[str]]:
    """(problems, what was found) for the plugin file at ``path``, in this process (nothing is
    registered); ``run_check`` runs it in a fresh interpreter, as the CLI does."""
    from . import plugins
    from .config import check_plugin, check_preset_backbones, options

    path = Path(path)
    if not path.is_file():
        return [f"{path}: no such file"], []
    plugins.discover()  # built-ins first, so a clash names both sides
    registries = {"defense": plugins.DEFENSES, "attack": plugins.ATTACKS, "metric": plugins.METRICS}
    recorded: list[tuple[str, str, object]] = []

    def recorder(kind):
        def register(name, *aliases):
            def deco(obj):
                recorded.append((kind, name, obj))
                obj.registered_name = name
                return obj
            return deco
        return register

    spec = importlib.util.spec_from_file_location(f"immunobench_checked_{path.stem}", path)
    if spec is None or spec.loader is None:
        return [f"{path}: not a Python file"], []
    module = importlib.util.module_from_spec(spec)
    real = {kind: getattr(plugins, f"register_{kind}") for kind in registries}
    for kind in registries:
        setattr(plugins, f"register_{kind}", recorder(kind))
    sys.modules[spec.name] = module  # dataclasses and typing resolve names through it, as in a real import
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001  (SystemExit, KeyboardInterrupt from a plugin too)
        return [_import_error(path, exc)], []
    finally:
        for kind, register in real.items():
            setattr(plugins, f"register_{kind}", register)
        sys.modules.pop(spec.name, None)

    problems: list[str] = []
    if not recorded:
        problems.append(f"{path}: registers nothing; decorate the class with @register_defense(\"name\") "
                        "(or @register_attack / @register_metric)")
    elif len(recorded) > 1:
        names = ", ".join(f"{kind} {name}" for kind, name, _ in recorded)
        problems.append(f"{path}: registers {len(recorded)} plugins ({names}); submit one plugin per file")
    found = []
    for kind, name, obj in recorded:
        label = f"{kind} {name}"
        registry = registries[kind]
        if name in registry.names():
            problems.append(f"{label}: the name is taken by {registry.origin(name)}; choose another")
        for check in (lambda: registry._check(name, obj), lambda: check_plugin(label, obj),
                      lambda: check_preset_backbones(label, obj, plugins.BACKBONES.names())):
            try:
                check()
            except PluginError as exc:
                problems.append(str(exc))
        problems += _signature_problems(kind, label, obj)
        try:
            fields = options(getattr(obj, "Config", object))
        except PluginError:
            fields = ()  # reported by check_plugin above
        problems += [f"{label}: Config.{f.name} has no help text; add field(..., metadata={{\"help\": \"...\"}})"
                     for f in fields if not str(f.help).strip()]
        found.append(f"{label} (version {getattr(obj, 'version', None)!r}, {len(fields)} config field(s))")
    return problems, found


def _signature_problems(kind: str, label: str, obj: object) -> list[str]:
    if kind not in SIGNATURES or not isinstance(obj, type):
        return []
    method, expected = SIGNATURES[kind]
    from . import plugins

    base = {"defense": plugins.Defense, "attack": plugins.Attack}[kind]
    if getattr(obj, method, None) is getattr(base, method):
        return [f"{label}: does not define {method}(self, {', '.join(expected)})"]
    params = list(inspect.signature(getattr(obj, method)).parameters.values())[1:]
    names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    required_extra = [p.name for p in params[len(expected):] if p.default is p.empty
                      and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if names[:len(expected)] != expected or required_extra:
        return [f"{label}: {method}{inspect.signature(getattr(obj, method))} must be "
                f"{method}(self, {', '.join(expected)}) (the runner calls it so)"]
    return []


def _import_error(path: Path, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"{path}:{exc.lineno}: SyntaxError: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    line = f":{frames[-1].lineno}" if frames else ""
    return f"{path}{line}: {type(exc).__name__} on import: {exc}"


def run_check(path: str | Path) -> tuple[list[str], list[str]]:
    """``check_file`` in a fresh interpreter → (problems, found)."""
    proc = subprocess.run([sys.executable, "-m", "immunobench.plugin_check", str(path)],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"{path}: the check itself failed ({tail})"], []
    result = json.loads(lines[-1])
    return result["problems"], result["found"]


if __name__ == "__main__":
    problems, found = check_file(sys.argv[1])
    sys.stdout.flush()
    print(json.dumps({"problems": problems, "found": found}))
