"""Resuming a killed immunization mid-way: periodic snapshots of a defense's training loop.

A defense keeps its loop's state in a dict of named objects: trained tensors (by name), optimizers,
generators, loss histories and positions (plain dicts and lists). ``restore`` loads the last snapshot
into those objects in place and returns the number of steps it holds; ``save`` writes a new one when
one is due. torch's global RNG goes into every snapshot as well, so a resumed stage releases the same
tensors, bit for bit, as one that was never killed (tests/test_snapshot.py checks every looping
defense). The runner keeps the snapshot under the stage's store key (``Store.snapshot_file``) and
deletes it once the stage's artifact is written.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

SNAPSHOT_FORMAT = 1


class LoopSnapshot:
    """``file`` None: never saves, never restores (a defense run outside the runner)."""

    def __init__(self, file: str | Path | None = None, every_s: float = 300.0,
                 on_restore: Callable[[int], None] | None = None):
        self.file = Path(file) if file is not None else None
        self.every_s, self.on_restore = every_s, on_restore
        self._last_save = time.monotonic()
        self.resumed_at: int | None = None  # the step a restore returned, for the runner's log

    def restore(self, state: dict[str, Any]) -> int:
        """Loads the snapshot's entries for the names in ``state`` into them → steps done (0: none saved).

        A loop with an outer level (IMMA's concepts) restores twice: its own position first, then the
        inner loop's state; both calls return the same step and leave torch's RNG as it was saved."""
        if self.file is None or not self.file.exists():
            return 0
        saved = torch.load(self.file, weights_only=False)  # written by ``save`` below, never downloaded
        if saved.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"{self.file}: snapshot format {saved.get('format')}, this code reads "
                             f"{SNAPSHOT_FORMAT}; delete the file to start the stage afresh")
        for name, obj in state.items():
            if name in saved["state"]:
                _load(obj, saved["state"][name], name)
        torch.set_rng_state(saved["torch_rng"])
        if self.on_restore and self.resumed_at is None:
            self.on_restore(saved["step"])
        self.resumed_at = saved["step"]
        return saved["step"]

    def due(self) -> bool:
        return self.file is not None and time.monotonic() - self._last_save >= self.every_s

    def save(self, step: int, state: dict[str, Any]) -> bool:
        """Writes ``state`` as the snapshot after ``step`` steps when one is due (atomically) → written."""
        if not self.due():
            return False
        blob = {"format": SNAPSHOT_FORMAT, "step": step, "torch_rng": torch.get_rng_state(),
                "state": {name: _snapshot(obj) for name, obj in state.items()}}
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f"{self.file.name}.{uuid.uuid4().hex}.tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.file)  # a kill mid-write leaves the previous snapshot whole
        self._last_save = time.monotonic()
        return True

    def discard(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)


def _snapshot(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if hasattr(obj, "state_dict"):  # optimizers, finetune.Batches
        return obj.state_dict()
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snapshot(v) for v in obj]
    if isinstance(obj, (int, float, str, bool, type(None))):
        return obj
    raise TypeError(f"cannot snapshot a {type(obj).__name__}; keep loop state in tensors, optimizers, "
                    "generators, dicts and lists")


def _load(obj: Any, saved: Any, name: str) -> None:
    """Puts ``saved`` into ``obj`` in place, so optimizers and closures that hold ``obj`` see it."""
    if isinstance(obj, torch.Generator):
        obj.set_state(saved)
    elif hasattr(obj, "load_state_dict"):
        obj.load_state_dict(saved)
    elif isinstance(obj, dict):
        for key in [k for k in obj if k not in saved]:
            del obj[key]
        for key, value in saved.items():
            current = obj.get(key)
            if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor) and current.shape == value.shape:
                with torch.no_grad():
                    current.copy_(value)  # a trained Parameter stays the object its optimizer updates
            elif isinstance(current, torch.Generator) or hasattr(current, "load_state_dict") or (
                    isinstance(current, (dict, list)) and type(current) is type(value)):
                _load(current, value, f"{name}.{key}")
            else:
                obj[key] = value
    elif isinstance(obj, list):
        obj[:] = saved
    else:
        raise TypeError(f"cannot restore {name} ({type(obj).__name__}) in place")
