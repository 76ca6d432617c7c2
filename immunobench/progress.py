"""Progress with an ETA for every long step (tqdm); quiet when disabled, e.g. in tests."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Task:
    def __init__(self, bar: tqdm | None):
        self._bar = bar

    def advance(self, n: int = 1, **postfix: float) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        self._bar.update(n)
        if self._bar.n >= (self._bar.total or float("inf")):
            self._bar.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def task(self, name: str, total: int, done: int = 0) -> Task:
        if not self.enabled:
            return Task(None)
        interactive = sys.stderr.isatty()
        return Task(tqdm(total=total, initial=done, desc=name, unit="step", dynamic_ncols=True,
                         mininterval=0.5 if interactive else 15.0, file=sys.stderr))
