"""The identity defense: the baseline every table needs (x^A in the MSGR formula)."""
from __future__ import annotations

from dataclasses import dataclass

from immunobench.plugins import Defense, Immunized, register_defense


@register_defense("none")
class NoDefense(Defense):
    """No immunization: the model is released as it is."""

    version = "1"

    @dataclass(frozen=True)
    class Config:
        pass

    def immunize(self, model, data, cfg) -> Immunized:
        return Immunized(info={"defense": "none"})
