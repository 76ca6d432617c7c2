"""Where ``metrics/`` meets the embedded world: the base of the ``*-world`` judges.

``clip-world``, ``dino-world``, ``lpips-world`` and ``classifier-world`` are registry entries like
any metric; core code reaches them only by name (``plugins.judges_for`` and ``get_metric``), so
only metric plugins import ``immunobench.world`` (``tests/test_imports.py`` checks both).
The world's judges are trained with this folder's declared ``WORLD_PREPROCESS``; the import goes
that one way (world → ``_preprocess``), and the judges load lazily, on first use.
"""
from __future__ import annotations

from typing import Any

import torch

from ._preprocess import WORLD_PREPROCESS, Backend


class WorldJudgeBackend(Backend):
    """A backend over one of the world's trained judges (``immunobench.world.judges``), loaded lazily."""

    judge_name: str = ""
    preprocess = WORLD_PREPROCESS

    def __init__(self, device: str | torch.device = "cpu", batch_size: int | None = None, weights_dir: str | None = None):
        super().__init__(device, batch_size)
        self.weights_dir = weights_dir
        self._judge = None

    @property
    def judge(self):
        if self._judge is None:
            from immunobench.world.judges import load_judge

            self._judge = load_judge(self.judge_name, self.weights_dir)
        return self._judge

    def _load(self) -> torch.nn.Module:
        return self.judge.model

    def weights_info(self) -> dict[str, Any]:
        cfg = self.judge.config
        return {"judge": self.judge_name, "sha256": cfg.get("weights_sha256"), "architecture": cfg.get("architecture")}
