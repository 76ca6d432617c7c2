"""Object classes: a parameter sampler (what varies between members) and a drawer (the silhouette).

Every drawer works in the object frame (x right, y down, inside [-1, 1]², grounded objects stand
on y ≈ 0.95). Random members come from ``sample``; a personal instance is a fixed parameter set
that uses features (patterns, marks, colour pairs) the samplers never produce, so pre-training
never sees anything like it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .draw import Pen, bezier, ellipse_pts, hexc, hsv, jitter, shade

Params = dict

BLACK = (25, 25, 28)
WHITE = (240, 240, 236)
CHROME = (190, 195, 200)
DARK_GLASS = (40, 50, 62)


def _pick(rng: np.random.Generator, options, p=None):
    return options[int(rng.choice(len(options), p=p))]


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


# Product colours that random members of man-made classes are painted in.
PAINTS = [hexc(c) for c in ("c0392b", "1f4e9c", "1d2a44", "222222", "e8e8e8", "a9b0b7",
                            "2e7d32", "f2c230", "e67e22", "7b1fa2", "8d6e63", "00838f")]


@dataclass(frozen=True)
class ObjectSpec:
    """How one object class is drawn and posed."""

    sample: Callable[[np.random.Generator], Params]
    draw: Callable[[Pen, Params], None]
    contexts: dict[str, float]  # background context → weight
    grounded: bool = True  # stands on the floor line and casts a shadow
    max_angle: float = 8.0  # degrees of random in-plane rotation
    scale: tuple[float, float] = (0.62, 0.86)
    flip: bool = True


# ====================================================================== Imagenette targets
def sample_cassette(rng):
    body = _pick(rng, [hexc("b8bcc2"), hexc("2b2b2e"), hexc("5a5f66"), hexc("9e2a2b"), hexc("d9d4c7"), hexc("24406b")])
    return dict(kind=_pick(rng, ["boombox", "deck", "walkman"], [0.5, 0.3, 0.2]), body=jitter(body, rng, 0.05),
                label=_pick(rng, [hexc("f2f2f2"), hexc("f5d76e"), hexc("e74c3c"), hexc("5dade2"), hexc("f0a04b")]),
                accent=_pick(rng, [hexc("d35400"), hexc("c0392b"), hexc("16a085"), hexc("f1c40f")]))


def _cassette_tape(pen: Pen, x0, y0, x1, y1, label):
    w, h = x1 - x0, y1 - y0
    pen.rrect(x0, y0, x1, y1, 0.03, (35, 35, 38))
    pen.rect(x0 + 0.06 * w, y0 + 0.08 * h, x1 - 0.06 * w, y1 - 0.2 * h, label)
    pen.rrect(x0 + 0.22 * w, y0 + 0.35 * h, x1 - 0.22 * w, y0 + 0.68 * h, 0.02, (70, 55, 45))
    for fx in (0.3, 0.7):
        cx, cy, r = x0 + fx * w, y0 + 0.515 * h, 0.14 * h
        pen.circle(cx, cy, r * 1.5, (55, 40, 30))
        pen.circle(cx, cy, r, WHITE)
        pen.circle(cx, cy, r * 0.45, (40, 40, 40))


def draw_cassette(pen: Pen, p: Params):
    body, dark = p["body"], shade(p["body"], 0.55)
    if p["kind"] == "boombox":
        pen.line([(-0.62, -0.3), (-0.56, -0.68), (0.56, -0.68), (0.62, -0.3)], dark, 0.08)
        pen.rrect(-0.97, -0.38, 0.97, 0.52, 0.12, body)
        for sx in (-0.6, 0.6):
            pen.circle(sx, 0.1, 0.3, shade(body, 0.75))
            pen.circle(sx, 0.1, 0.25, (45, 45, 48))
            pen.circle(sx, 0.1, 0.16, (70, 70, 74))
            pen.circle(sx, 0.1, 0.06, (120, 120, 125))
        _cassette_tape(pen, -0.27, -0.18, 0.27, 0.2, p["label"])
        for i in range(5):
            pen.rect(-0.28 + i * 0.115, -0.46, -0.2 + i * 0.115, -0.38, (60, 60, 60) if i % 2 else CHROME)
        pen.rect(-0.25, 0.3, 0.25, 0.36, p["accent"])
    elif p["kind"] == "deck":
        pen.rrect(-0.95, -0.5, 0.95, 0.5, 0.06, body)
        pen.rrect(-0.85, -0.38, 0.25, 0.25, 0.04, shade(body, 0.7))
        _cassette_tape(pen, -0.78, -0.32, 0.18, 0.2, p["label"])
        for i in range(6):
            pen.rect(-0.8 + i * 0.17, 0.32, -0.66 + i * 0.17, 0.44, CHROME if i != 2 else p["accent"])
        for gx in range(4):
            for gy in range(5):
                pen.circle(0.4 + gx * 0.14, -0.32 + gy * 0.14, 0.04, dark)
    else:
        pen.rrect(-0.55, -0.9, 0.55, 0.88, 0.1, body)
        pen.rrect(-0.45, -0.55, 0.45, 0.25, 0.04, shade(body, 0.7))
        _cassette_tape(pen, -0.4, -0.5, 0.4, 0.2, p["label"])
        for i in range(4):
            pen.rect(-0.42 + i * 0.22, -0.98, -0.26 + i * 0.22, -0.9, CHROME)
        pen.rect(-0.4, 0.45, 0.4, 0.55, p["accent"])


def sample_chainsaw(rng):
    body = _pick(rng, [hexc("f26b1d"), hexc("f28c1d"), hexc("f7c21b"), hexc("c62828"), hexc("2e7d32"), hexc("e85d04")],
                 [0.3, 0.2, 0.15, 0.15, 0.1, 0.1])
    return dict(body=jitter(body, rng, 0.05), bar_len=_u(rng, 0.85, 1.0), handle=_pick(rng, [BLACK, (60, 60, 60)]))


def draw_chainsaw(pen: Pen, p: Params):
    body, dark = p["body"], shade(p["body"], 0.6)
    end = p["bar_len"]
    # guide bar with chain teeth: the chainsaw's signature
    pen.rrect(-0.05, -0.12, end, 0.14, 0.13, (40, 40, 42))
    pen.rrect(-0.02, -0.08, end - 0.03, 0.1, 0.09, CHROME)
    xs = np.linspace(0.0, end - 0.12, 11)
    for x in xs:
        pen.poly([(x, -0.12), (x + 0.05, -0.18), (x + 0.08, -0.12)], (50, 50, 52))
        pen.poly([(x, 0.14), (x + 0.05, 0.2), (x + 0.08, 0.14)], (50, 50, 52))
    pen.line([(0.05, 0.01), (end - 0.1, 0.01)], (150, 155, 160), 0.02)
    # engine housing and handles
    pen.line(bezier((-0.55, -0.34), (-0.35, -0.9), (0.02, -0.36)), p["handle"], 0.08)
    pen.poly([(-0.78, -0.38), (-0.15, -0.42), (0.06, -0.22), (0.06, 0.3), (-0.2, 0.38), (-0.72, 0.36), (-0.86, 0.08)], body)
    pen.poly([(-0.7, 0.1), (-0.15, 0.1), (-0.12, 0.34), (-0.7, 0.34)], dark)
    pen.line([(-0.74, -0.26), (-0.98, -0.3), (-1.0, 0.02), (-0.92, 0.22), (-0.72, 0.2)], body, 0.09)
    pen.poly([(0.06, -0.52), (0.14, -0.5), (0.12, -0.16), (0.05, -0.16)], (35, 35, 35))
    for i in range(4):
        pen.line([(-0.55 + i * 0.1, -0.22), (-0.5 + i * 0.1, 0.0)], dark, 0.025)
    pen.rect(-0.45, -0.36, -0.2, -0.3, WHITE)


def sample_church(rng):
    wall = _pick(rng, [hexc("f0ece2"), hexc("d8cfc0"), hexc("b5a48b"), hexc("a34a3a"), hexc("9a9a9a"), hexc("e9dfc4")])
    roof = _pick(rng, [hexc("5b3a29"), hexc("3d4b5c"), hexc("7a2e22"), hexc("2f4f3f"), hexc("555555")])
    return dict(wall=jitter(wall, rng, 0.04), roof=jitter(roof, rng, 0.05), tower=_pick(rng, [-0.42, 0.0, 0.42], [0.3, 0.4, 0.3]),
                spire_h=_u(rng, 0.45, 0.65), door=_pick(rng, [hexc("5d3a1a"), hexc("7b241c"), hexc("1b3a5c")]))


def _arch_window(pen: Pen, cx, top, w, bottom, col):
    t = np.linspace(np.pi, 2 * np.pi, 12)
    top_pts = np.stack([cx + w * np.cos(t), top + w + w * np.sin(t)], 1)
    pen.poly(np.concatenate([[(cx - w, bottom)], top_pts, [(cx + w, bottom)]]), col)


def draw_church(pen: Pen, p: Params):
    wall, roof, tx = p["wall"], p["roof"], p["tower"]
    nave_cx = -tx * 0.35
    side = shade(wall, 0.85)
    pen.rect(nave_cx - 0.62, 0.0, nave_cx + 0.62, 0.95, wall)
    pen.poly([(nave_cx - 0.72, 0.02), (nave_cx, -0.42), (nave_cx + 0.72, 0.02)], roof)
    pen.circle(nave_cx, -0.12, 0.09, (60, 70, 110))
    for k in (-0.42, -0.2, 0.2, 0.42):
        x = nave_cx + k
        if abs(x - tx) > 0.24:
            _arch_window(pen, x, 0.18, 0.06, 0.55, (50, 65, 100))
    # tower + spire + cross
    top = -0.98 + p["spire_h"]
    pen.rect(tx - 0.18, top, tx + 0.18, 0.95, side)
    pen.rect(tx - 0.2, top - 0.04, tx + 0.2, top + 0.03, shade(wall, 0.7))
    _arch_window(pen, tx, top + 0.08, 0.07, top + 0.3, (30, 30, 35))
    pen.poly([(tx - 0.21, top - 0.03), (tx, -0.88), (tx + 0.21, top - 0.03)], roof)
    pen.line([(tx, -0.86), (tx, -1.0)], (80, 70, 50), 0.025)
    pen.line([(tx - 0.05, -0.95), (tx + 0.05, -0.95)], (80, 70, 50), 0.025)
    door_x = tx if abs(tx) < 0.01 else nave_cx + (0.05 if tx < 0 else -0.05)
    _arch_window(pen, door_x, 0.55, 0.12, 0.95, p["door"])
    pen.rect(nave_cx - 0.66, 0.92, nave_cx + 0.66, 0.98, shade(wall, 0.6))


def sample_gaspump(rng):
    body = _pick(rng, [hexc("d62828"), hexc("f0f0f0"), hexc("f4c430"), hexc("1e5aa8"), hexc("2a9d4b"), hexc("333333")])
    return dict(vintage=bool(rng.random() < 0.35), body=jitter(body, rng, 0.04),
                accent=_pick(rng, [hexc("d62828"), hexc("1e5aa8"), hexc("f4c430"), hexc("2a9d4b"), WHITE]),
                hose_side=1.0)


def draw_gaspump(pen: Pen, p: Params):
    body, acc = p["body"], p["accent"]
    if acc == body:
        acc = shade(body, 0.6)
    pen.line(bezier((0.3, -0.45), (0.95, -0.2), (0.75, 0.55)) , (30, 30, 30), 0.07)
    pen.line(bezier((0.75, 0.55), (0.6, 0.85), (0.48, 0.15)), (30, 30, 30), 0.07)
    if p["vintage"]:
        pen.rrect(-0.36, -0.55, 0.36, 0.9, 0.12, body)
        pen.circle(0.0, -0.72, 0.22, WHITE)
        pen.rect(-0.22, -0.76, 0.22, -0.68, acc)
        pen.rect(-0.06, -0.55, 0.06, -0.5, CHROME)
        pen.circle(0.0, -0.22, 0.2, WHITE)
        pen.circle(0.0, -0.22, 0.2, WHITE, outline=(40, 40, 40), width=0.03)
        pen.line([(0.0, -0.22), (0.1, -0.32)], BLACK, 0.025)
        pen.rect(-0.36, 0.15, 0.36, 0.25, acc)
    else:
        pen.rrect(-0.38, -0.85, 0.38, 0.9, 0.05, body)
        pen.rect(-0.38, -0.85, 0.38, -0.6, acc)
        pen.rect(-0.38, -0.68, 0.38, -0.64, WHITE)
        pen.rect(-0.27, -0.5, 0.27, -0.2, (35, 40, 45))
        for row, y in enumerate((-0.45, -0.33)):
            for i in range(4):
                pen.rect(-0.2 + i * 0.11, y, -0.13 + i * 0.11, y + 0.07, (120, 230, 140) if row == 0 else (250, 170, 60))
        for gx in range(3):
            for gy in range(3):
                pen.rect(-0.18 + gx * 0.09, -0.1 + gy * 0.08, -0.12 + gx * 0.09, -0.05 + gy * 0.08, CHROME)
        pen.rect(-0.38, 0.3, 0.38, 0.4, acc)
    # nozzle in its holster
    pen.rect(0.36, -0.05, 0.5, 0.2, (50, 50, 50))
    pen.poly([(0.44, 0.05), (0.62, 0.0), (0.64, 0.08), (0.48, 0.18)], (45, 45, 45))
    pen.line([(0.62, 0.04), (0.75, 0.14)], CHROME, 0.04)
    pen.rect(-0.45, 0.86, 0.45, 0.98, (150, 150, 150))


def sample_tench(rng):
    return dict(body=hsv(_u(rng, 0.14, 0.24), _u(rng, 0.45, 0.7), _u(rng, 0.35, 0.55)),
                belly=hsv(_u(rng, 0.11, 0.15), _u(rng, 0.4, 0.6), _u(rng, 0.6, 0.8)),
                held=bool(rng.random() < 0.4), skin=_pick(rng, [hexc("e0ac8a"), hexc("c68642"), hexc("f1c27d"), hexc("8d5524")]),
                sleeve=_pick(rng, [hexc("4a5a3a"), hexc("2f3e5c"), hexc("6b4f3a"), hexc("8a8a80")]), fat=_u(rng, 0.26, 0.33))


def draw_tench(pen: Pen, p: Params):
    body, fin = p["body"], shade(p["body"], 0.7)
    ry = p["fat"]
    grips = (-0.38, 0.2)
    if p["held"]:  # ImageNet's tench is mostly a trophy in an angler's hands
        for x in grips:
            pen.line([(x + 0.08, 1.3), (x, 0.3)], p["sleeve"], 0.22)
            pen.ellipse(x, ry * 0.7, 0.14, 0.1, p["skin"])
    pen.poly([(-0.6, 0.0), (-0.98, -0.32), (-0.92, 0.0), (-0.98, 0.32)], fin)  # broad tail
    pen.poly([(-0.4, -ry + 0.05), (-0.25, -ry - 0.15), (0.0, -ry - 0.13), (0.05, -ry + 0.05)], fin)
    pen.poly([(-0.35, ry - 0.06), (-0.2, ry + 0.13), (-0.05, ry - 0.05)], fin)
    pen.ellipse(-0.05, 0.0, 0.72, ry, body)
    pen.ellipse(-0.05, 0.08, 0.62, ry * 0.55, p["belly"])
    pen.ellipse(-0.08, -0.08, 0.6, ry * 0.45, shade(body, 0.8))
    pen.ellipse(0.35, 0.12, 0.13, 0.06, fin, rot=0.5)
    pen.arc(0.38, 0.0, 0.12, ry * 0.8, -1.2, 1.2, shade(body, 0.6), 0.02)
    pen.circle(0.5, -0.06, 0.05, (200, 70, 40))
    pen.circle(0.5, -0.06, 0.022, BLACK)
    pen.line([(0.63, 0.05), (0.7, 0.04)], shade(body, 0.5), 0.02)
    pen.line([(0.62, 0.07), (0.66, 0.15)], shade(body, 0.5), 0.012)
    if p["held"]:
        for x in grips:
            for k in range(4):
                pen.ellipse(x - 0.1 + k * 0.065, ry * 0.35, 0.032, 0.09, shade(p["skin"], 0.97 - 0.03 * k))


def sample_garbage_truck(rng):
    body = _pick(rng, [hexc("2e7d32"), hexc("f0f0f0"), hexc("ef6c00"), hexc("1565c0"), hexc("fbc02d"), hexc("5d6d3a")])
    cab = body if rng.random() < 0.5 else _pick(rng, [WHITE, hexc("c62828"), hexc("263238")])
    return dict(body=jitter(body, rng, 0.04), cab=cab, stripe=_pick(rng, [hexc("fdd835"), WHITE, hexc("e53935"), BLACK]),
                axles=int(rng.integers(2, 4)))


def draw_garbage_truck(pen: Pen, p: Params):
    body, cab = p["body"], p["cab"]
    pen.rect(-0.95, 0.3, 0.98, 0.48, (45, 45, 48))
    pen.rrect(-0.9, -0.58, 0.3, 0.38, 0.05, body)
    for x in np.linspace(-0.75, 0.15, 6):
        pen.line([(x, -0.52), (x, 0.32)], shade(body, 0.8), 0.025)
    pen.poly([(-1.0, -0.3), (-0.9, -0.62), (-0.78, -0.62), (-0.78, 0.42), (-1.0, 0.42)], shade(body, 0.7))
    pen.rect(-0.9, 0.05, 0.3, 0.14, p["stripe"])
    pen.poly([(0.34, -0.4), (0.72, -0.4), (0.94, -0.02), (0.97, 0.42), (0.34, 0.42)], cab)
    pen.poly([(0.55, -0.33), (0.7, -0.33), (0.87, -0.04), (0.55, -0.04)], (70, 100, 130))
    pen.rect(0.4, -0.33, 0.5, -0.04, (70, 100, 130))
    pen.rect(0.9, 0.2, 0.99, 0.3, (250, 220, 120))
    xs = [-0.62, 0.66] if p["axles"] == 2 else [-0.7, -0.4, 0.66]
    for x in xs:
        pen.circle(x, 0.55, 0.19, (22, 22, 22))
        pen.circle(x, 0.55, 0.09, (150, 150, 150))


def sample_springer(rng):
    patch = hexc("5b2e1a") if rng.random() < 0.7 else hexc("1c1c1c")
    return dict(patch=jitter(patch, rng, 0.05), coat=jitter(hexc("f3efe6"), rng, 0.02), head_up=_u(rng, -0.06, 0.08),
                saddle=_u(rng, 0.25, 0.45), spots=int(rng.integers(3, 8)), spot_seed=int(rng.integers(1 << 30)))


def draw_springer(pen: Pen, p: Params):
    coat, patch = p["coat"], p["patch"]
    dark = shade(patch, 0.8)
    hy = -0.42 + p["head_up"]
    pen.line([(-0.6, -0.12), (-0.78, -0.32)], patch, 0.07)
    pen.line([(-0.78, -0.32), (-0.83, -0.36)], coat, 0.05)
    for x, c in ((-0.42, shade(coat, 0.9)), (0.22, shade(coat, 0.9)), (-0.52, coat), (0.34, coat)):
        pen.rrect(x - 0.06, 0.05, x + 0.06, 0.9, 0.05, c)
        pen.ellipse(x + 0.03, 0.9, 0.09, 0.05, c)
    pen.ellipse(-0.12, 0.0, 0.55, 0.27, coat)
    pen.ellipse(0.28, -0.02, 0.22, 0.28, coat)
    pen.poly([(0.2, -0.2), (0.42, hy + 0.05), (0.62, hy + 0.1), (0.45, 0.05)], coat)
    pen.ellipse(-0.18, -0.13, p["saddle"], 0.16, patch)
    pen.ellipse(-0.5, -0.02, 0.14, 0.15, patch)
    srng = np.random.default_rng(p["spot_seed"])
    for _ in range(p["spots"]):
        pen.circle(_u(srng, -0.55, 0.35), _u(srng, 0.05, 0.6), 0.03, patch)
    pen.ellipse(0.56, hy, 0.19, 0.16, patch)
    pen.ellipse(0.76, hy + 0.08, 0.15, 0.08, coat)
    pen.ellipse(0.6, hy - 0.08, 0.05, 0.09, coat, rot=0.4)
    pen.circle(0.9, hy + 0.05, 0.04, BLACK)
    pen.circle(0.62, hy - 0.03, 0.025, BLACK)
    pen.ellipse(0.45, hy + 0.2, 0.1, 0.24, dark, rot=0.25)


def sample_golf_ball(rng):
    return dict(tee=bool(rng.random() < 0.5), tee_col=_pick(rng, [hexc("d9b98c"), WHITE, hexc("e53935"), hexc("fdd835")]),
                logo=_pick(rng, [None, hexc("e53935"), hexc("1e3a8a"), BLACK]),
                white=jitter((244, 244, 240), rng, 0.02))


_DIMPLES = np.array([(x + (0.5 * 0.12 if j % 2 else 0), j * 0.104) for j in range(-7, 8) for x in np.arange(-0.84, 0.85, 0.12)])


def draw_golf_ball(pen: Pen, p: Params):
    cy = -0.18 if p["tee"] else 0.2
    r = 0.7
    if p["tee"]:
        pen.poly([(-0.22, cy + 0.6), (0.22, cy + 0.6), (0.05, cy + 0.72), (0.03, 0.98), (-0.03, 0.98), (-0.05, cy + 0.72)], p["tee_col"])
    white = p["white"]
    for k, f in enumerate((0.68, 0.78, 0.87, 0.94, 1.0)):
        rr = r * (1 - 0.17 * k)
        off = -0.06 * k
        pen.circle(off, cy + off, rr, shade(white, f))
    for dx, dy in _DIMPLES:
        d = math.hypot(dx, dy)
        if d < r * 0.9:
            light = 1 - 0.3 * max(0.0, (dx + dy) / r + d / r) / 2
            k = math.sqrt(max(0.0, 1 - (d / r) ** 2))
            pen.ellipse(dx, cy + dy, 0.035 * (0.5 + 0.5 * k), 0.035 * (0.5 + 0.5 * k), shade(white, 0.82 * light), n=12)
    if p["logo"] is not None:
        pen.rect(-0.2, cy - 0.05, 0.15, cy + 0.04, p["logo"])


def sample_parachute(rng):
    schemes = [(hexc("e53935"), WHITE), (hexc("fb8c00"), WHITE), (hexc("1e88e5"), hexc("fdd835")),
               (hexc("43a047"), WHITE), (hexc("8e24aa"), hexc("fdd835")), (hexc("e53935"), hexc("1e88e5"))]
    a, b = _pick(rng, schemes)
    return dict(ramair=bool(rng.random() < 0.35), a=a, b=b, gores=int(rng.integers(8, 14)),
                rainbow=bool(rng.random() < 0.2))


_RAINBOW = [hexc(c) for c in ("e53935", "fb8c00", "fdd835", "43a047", "1e88e5", "8e24aa")]


def draw_parachute(pen: Pen, p: Params):
    def colour(i):
        return _RAINBOW[i % 6] if p["rainbow"] else (p["a"] if i % 2 == 0 else p["b"])

    jumper_y = 0.7
    if p["ramair"]:
        n = 9
        us = np.linspace(-0.95, 0.95, n + 1)
        top = lambda u: -0.45 - 0.3 * (1 - u ** 2)  # noqa: E731
        for i in range(n):
            u0, u1 = us[i], us[i + 1]
            pen.poly([(u0, top(u0)), (u1, top(u1)), (u1, top(u1) + 0.22), (u0, top(u0) + 0.22)], colour(i))
        anchors = [(u, top(u) + 0.22) for u in us[::2]]
    else:
        n = p["gores"]
        cy, rx, ry = -0.2, 0.95, 0.72
        us = np.sin(np.linspace(-np.pi / 2, np.pi / 2, n + 1))
        th = np.linspace(0, np.pi / 2, 10)
        for i in range(n):
            m0 = np.stack([rx * us[i] * np.cos(th), cy - ry * np.sin(th)], 1)
            m1 = np.stack([rx * us[i + 1] * np.cos(th), cy - ry * np.sin(th)], 1)[::-1]
            sag = [(rx * (us[i] + us[i + 1]) / 2, cy + 0.07)]
            pen.poly(np.concatenate([sag, m0, m1]), colour(i))
        anchors = [(rx * u, cy) for u in us]
    for ax, ay in anchors:
        pen.line([(ax, ay), (0.0, jumper_y - 0.1)], (60, 60, 60), 0.008)
    pen.circle(0.0, jumper_y - 0.08, 0.05, hexc("e0ac8a"))
    pen.rrect(-0.05, jumper_y - 0.03, 0.05, jumper_y + 0.14, 0.03, (40, 40, 60))
    pen.line([(-0.03, jumper_y + 0.12), (-0.06, jumper_y + 0.28)], (40, 40, 60), 0.035)
    pen.line([(0.03, jumper_y + 0.12), (0.06, jumper_y + 0.28)], (40, 40, 60), 0.035)


def sample_horn(rng):
    brass = hsv(_u(rng, 0.1, 0.13), _u(rng, 0.55, 0.78), _u(rng, 0.72, 0.9)) if rng.random() < 0.88 else (200, 200, 205)
    return dict(brass=brass, coil_r=_u(rng, 0.48, 0.56))


def draw_horn(pen: Pen, p: Params):
    brass = p["brass"]
    dark, light = shade(brass, 0.55), shade(brass, 1.35)
    R = p["coil_r"]
    cx, cy = -0.22, 0.0
    # flared bell: the widest thing in the silhouette
    upper = bezier((cx + 0.2, 0.28), (0.45, 0.26), (0.78, -0.1))
    lower = bezier((0.78, 0.95), (0.45, 0.52), (cx + 0.2, 0.44))
    pen.poly(np.concatenate([upper, lower]), brass)
    pen.ellipse(0.8, 0.42, 0.12, 0.53, shade(brass, 1.15))
    pen.ellipse(0.82, 0.42, 0.08, 0.45, dark)
    for k, r in enumerate((R, R * 0.78, R * 0.56)):
        pen.arc(cx, cy, r, r, 0, 2 * np.pi, dark, 0.085, n=40)
        pen.arc(cx, cy, r, r, 0, 2 * np.pi, brass, 0.06, n=40)
        pen.arc(cx, cy, r - 0.012, r - 0.012, np.pi * 1.05, np.pi * 1.6, light, 0.015, n=12)
    for i in range(3):
        x = cx - 0.1 + i * 0.11
        pen.rect(x - 0.035, -0.16, x + 0.035, 0.1, (185, 185, 190))
        pen.circle(x, -0.19, 0.04, (150, 150, 155))
    pen.line([(cx - R * 0.7, -R * 0.7), (-0.92, -0.6)], brass, 0.035)
    pen.ellipse(-0.95, -0.62, 0.04, 0.05, CHROME)


# ====================================================================== other objects
def sample_apple(rng):
    col = _pick(rng, [hexc("c62828"), hexc("d84315"), hexc("7cb342"), hexc("f9a825"), hexc("ad1457")], [0.45, 0.15, 0.2, 0.1, 0.1])
    return dict(col=jitter(col, rng, 0.06), leaf=bool(rng.random() < 0.7), w=_u(rng, 0.95, 1.08))


def draw_apple(pen: Pen, p: Params):
    c, w = p["col"], p["w"]
    pen.line([(0.0, -0.42), (0.06, -0.72)], (90, 60, 30), 0.05)
    if p["leaf"]:
        pen.ellipse(0.24, -0.62, 0.18, 0.07, (70, 140, 50), rot=-0.5)
    pen.ellipse(-0.22 * w, 0.05, 0.52 * w, 0.55, c)
    pen.ellipse(0.22 * w, 0.05, 0.52 * w, 0.55, c)
    pen.ellipse(0.0, 0.3, 0.55 * w, 0.48, c)
    pen.ellipse(-0.05, -0.36, 0.14, 0.06, shade(c, 0.6))
    pen.ellipse(-0.32, -0.12, 0.1, 0.16, shade(c, 1.35), rot=0.3)


def sample_sailboat(rng):
    return dict(hull=_pick(rng, PAINTS), sail=_pick(rng, [WHITE, WHITE, hexc("f5e6c8"), hexc("e53935"), hexc("1e88e5")]),
                jib=bool(rng.random() < 0.7))


def draw_sailboat(pen: Pen, p: Params):
    pen.line([(0.0, -0.95), (0.0, 0.45)], (90, 70, 50), 0.03)
    pen.poly([(0.04, -0.9), (0.04, 0.38), (0.72, 0.38)], p["sail"])
    if p["jib"]:
        pen.poly([(-0.04, -0.75), (-0.04, 0.36), (-0.55, 0.36)], shade(p["sail"], 0.92))
    pen.poly([(-0.9, 0.45), (0.95, 0.45), (0.7, 0.75), (-0.7, 0.75)], p["hull"])
    pen.rect(-0.82, 0.45, 0.88, 0.5, WHITE)


def sample_tree(rng):
    return dict(conifer=bool(rng.random() < 0.35), leaf=hsv(_u(rng, 0.22, 0.36), _u(rng, 0.5, 0.8), _u(rng, 0.35, 0.65)),
                autumn=bool(rng.random() < 0.15), blobs=rng.uniform(-1, 1, (6, 2)).tolist())


def draw_tree(pen: Pen, p: Params):
    leaf = hexc("d35400") if p["autumn"] else p["leaf"]
    pen.poly([(-0.09, 0.95), (-0.06, 0.1), (0.06, 0.1), (0.09, 0.95)], (95, 65, 40))
    if p["conifer"]:
        for k in range(4):
            y = 0.35 - k * 0.33
            pen.poly([(-0.7 + k * 0.12, y + 0.25), (0.0, y - 0.45), (0.7 - k * 0.12, y + 0.25)], shade(leaf, 0.85 + 0.08 * k))
    else:
        pen.circle(0.0, -0.3, 0.55, shade(leaf, 0.85))
        for dx, dy in p["blobs"]:
            pen.circle(dx * 0.35, -0.3 + dy * 0.3, 0.32, shade(leaf, 0.95 + 0.1 * dy * -1))


def sample_house(rng):
    return dict(wall=_pick(rng, [hexc("f2e6c9"), hexc("c0392b"), hexc("e0e0e0"), hexc("8ab4d8"), hexc("f4d35e"), hexc("9c7b5b")]),
                roof=_pick(rng, [hexc("6d2e1f"), hexc("37474f"), hexc("5d4037"), hexc("1b3a5c")]), chimney=bool(rng.random() < 0.6),
                door=_pick(rng, [hexc("5d3a1a"), hexc("c62828"), hexc("1b5e20"), hexc("0d47a1")]))


def draw_house(pen: Pen, p: Params):
    if p["chimney"]:
        pen.rect(0.35, -0.7, 0.5, -0.25, shade(p["wall"], 0.7))
    pen.rect(-0.7, -0.15, 0.7, 0.95, p["wall"])
    pen.poly([(-0.85, -0.1), (0.0, -0.8), (0.85, -0.1)], p["roof"])
    pen.rect(-0.12, 0.45, 0.12, 0.95, p["door"])
    for x in (-0.45, 0.45):
        pen.rect(x - 0.15, 0.1, x + 0.15, 0.4, (255, 250, 230))
        pen.rect(x - 0.13, 0.12, x + 0.13, 0.38, (110, 150, 190))
        pen.line([(x, 0.12), (x, 0.38)], WHITE, 0.02)
    pen.circle(0.0, -0.33, 0.09, (110, 150, 190))


def sample_umbrella(rng):
    a = _pick(rng, PAINTS)
    return dict(a=a, b=_pick(rng, [a, a, WHITE, hexc("fdd835")]), ribs=int(rng.integers(6, 9)))


def draw_umbrella(pen: Pen, p: Params):
    pen.line([(0.0, -0.7), (0.0, 0.75)], (60, 50, 40), 0.035)
    pen.arc(0.12, 0.75, 0.12, 0.12, 0, np.pi, (60, 50, 40), 0.05)
    n = p["ribs"]
    xs = np.linspace(-0.98, 0.98, n + 1)
    th = np.linspace(0, np.pi / 2, 8)
    for i in range(n):
        u0, u1 = xs[i], xs[i + 1]
        m0 = np.stack([u0 * np.cos(th), -0.1 - 0.55 * np.sin(th)], 1)
        m1 = np.stack([u1 * np.cos(th), -0.1 - 0.55 * np.sin(th)], 1)[::-1]
        pen.poly(np.concatenate([m0, m1, [((u0 + u1) / 2, -0.16)]]), p["a"] if i % 2 == 0 else p["b"])
    pen.line([(0.0, -0.65), (0.0, -0.78)], (60, 50, 40), 0.035)


def sample_bicycle(rng):
    return dict(frame=_pick(rng, PAINTS), big=_u(rng, 0.36, 0.42))


def draw_bicycle(pen: Pen, p: Params):
    r, f = p["big"], p["frame"]
    rear, front = (-0.55, 0.5), (0.55, 0.5)
    for cx, cy in (rear, front):
        pen.arc(cx, cy, r, r, 0, 2 * np.pi, (30, 30, 30), 0.05, n=40)
        for a in np.linspace(0, np.pi, 5, endpoint=False):
            pen.line([(cx + r * math.cos(a), cy + r * math.sin(a)), (cx - r * math.cos(a), cy - r * math.sin(a))], (170, 170, 170), 0.008)
    crank = (-0.05, 0.5)
    seat = (-0.2, -0.1)
    head = (0.42, -0.08)
    for a, b in ((rear, crank), (rear, seat), (seat, crank), (crank, head), (seat, (0.4, -0.02)), (head, front)):
        pen.line([a, b], f, 0.045)
    pen.line([(seat[0] - 0.02, seat[1]), (-0.23, -0.2)], (60, 60, 60), 0.03)
    pen.rrect(-0.36, -0.26, -0.1, -0.19, 0.03, (30, 30, 30))
    pen.line([head, (0.38, -0.22), (0.52, -0.26)], (40, 40, 40), 0.035)
    pen.circle(crank[0], crank[1], 0.07, (80, 80, 80))


def sample_clock(rng):
    return dict(rim=_pick(rng, [BLACK, hexc("8d6e63"), hexc("b0b7bf"), hexc("c62828"), hexc("d4af37")]),
                face=_pick(rng, [WHITE, hexc("f5ecd5")]), h=_u(rng, 0, 12), m=_u(rng, 0, 60))


def draw_clock(pen: Pen, p: Params):
    pen.circle(0.0, 0.0, 0.85, p["rim"])
    pen.circle(0.0, 0.0, 0.74, p["face"])
    for k in range(12):
        a = k * np.pi / 6
        r0 = 0.58 if k % 3 else 0.52
        pen.line([(r0 * math.sin(a), -r0 * math.cos(a)), (0.66 * math.sin(a), -0.66 * math.cos(a))], BLACK, 0.035 if k % 3 == 0 else 0.02)
    ah, am = p["h"] / 12 * 2 * np.pi, p["m"] / 60 * 2 * np.pi
    pen.line([(0, 0), (0.35 * math.sin(ah), -0.35 * math.cos(ah))], BLACK, 0.05)
    pen.line([(0, 0), (0.55 * math.sin(am), -0.55 * math.cos(am))], BLACK, 0.03)
    pen.circle(0.0, 0.0, 0.05, hexc("c62828"))


def sample_kite(rng):
    a = _pick(rng, PAINTS[:4] + PAINTS[6:10])
    return dict(a=a, b=_pick(rng, [WHITE, hexc("fdd835"), hexc("e53935"), hexc("1e88e5")]))


def draw_kite(pen: Pen, p: Params):
    top, left, right, bottom = (0.0, -0.9), (-0.5, -0.35), (0.5, -0.35), (0.0, 0.45)
    cen = (0.0, -0.35)
    pen.line(bezier(bottom, (0.3, 0.7), (-0.1, 0.98)), (90, 90, 90), 0.012)
    for i, t in enumerate((0.3, 0.6, 0.88)):
        x, y = bezier(bottom, (0.3, 0.7), (-0.1, 0.98), n=20)[int(t * 19)]
        pen.poly([(x - 0.07, y - 0.04), (x + 0.07, y + 0.04), (x + 0.07, y - 0.04), (x - 0.07, y + 0.04)], p["b"] if i % 2 else p["a"])
    pen.poly([top, right, cen], p["a"])
    pen.poly([top, left, cen], p["b"])
    pen.poly([bottom, right, cen], p["b"])
    pen.poly([bottom, left, cen], p["a"])
    pen.line([top, bottom], (70, 50, 30), 0.02)
    pen.line([left, right], (70, 50, 30), 0.02)


def sample_mug(rng):
    return dict(col=_pick(rng, PAINTS + [WHITE, WHITE]), steam=bool(rng.random() < 0.5), band=bool(rng.random() < 0.3))


def draw_mug(pen: Pen, p: Params):
    c = p["col"]
    pen.arc(0.5, 0.28, 0.26, 0.3, -np.pi / 2, np.pi / 2, shade(c, 0.85), 0.1)
    pen.rrect(-0.55, -0.25, 0.52, 0.95, 0.1, c)
    pen.ellipse(-0.015, -0.25, 0.535, 0.1, shade(c, 0.8))
    pen.ellipse(-0.015, -0.24, 0.47, 0.07, (70, 45, 30))
    if p["band"]:
        pen.rect(-0.55, 0.25, 0.52, 0.38, shade(c, 0.6))
    if p["steam"]:
        for x in (-0.2, 0.1):
            pen.line(bezier((x, -0.38), (x + 0.12, -0.55), (x - 0.04, -0.85)), (235, 235, 235), 0.035)


def sample_lamp(rng):
    return dict(shade=_pick(rng, [hexc("f5ecd5"), hexc("f0e0b0"), WHITE, hexc("c8a2c8"), hexc("a5d6a7"), hexc("e0876a")]),
                base=_pick(rng, [hexc("8d6e63"), BLACK, CHROME, hexc("d4af37"), hexc("455a64")]), on=bool(rng.random() < 0.5))


def draw_lamp(pen: Pen, p: Params):
    pen.ellipse(0.0, 0.88, 0.35, 0.08, p["base"])
    pen.rect(-0.035, -0.1, 0.035, 0.88, p["base"])
    pen.ellipse(0.0, 0.55, 0.14, 0.2, p["base"])
    col = shade(p["shade"], 1.25) if p["on"] else p["shade"]
    pen.poly([(-0.32, -0.75), (0.32, -0.75), (0.6, -0.1), (-0.6, -0.1)], col)
    pen.ellipse(0.0, -0.1, 0.6, 0.05, shade(col, 0.85))


def sample_airplane(rng):
    return dict(body=_pick(rng, [WHITE, WHITE, hexc("cfd8dc"), hexc("90a4ae")]), tail=_pick(rng, PAINTS))


def draw_airplane(pen: Pen, p: Params):
    b = p["body"]
    pen.poly([(-0.15, 0.0), (0.25, 0.0), (-0.1, 0.55), (-0.3, 0.55)], shade(b, 0.85))
    pen.poly([(-0.75, -0.05), (-0.62, -0.05), (-0.82, -0.5), (-0.95, -0.5)], p["tail"])
    pen.ellipse(0.0, 0.0, 0.92, 0.11, b)
    pen.poly([(-0.1, 0.02), (0.25, 0.02), (-0.05, -0.45), (-0.2, -0.45)], shade(b, 0.92))
    for x in np.linspace(-0.55, 0.6, 12):
        pen.circle(x, -0.025, 0.018, (60, 80, 110))
    pen.rect(-0.85, 0.02, 0.6, 0.05, p["tail"])


def sample_mushroom(rng):
    cap = _pick(rng, [hexc("d32f2f"), hexc("8d6e63"), hexc("a1887f"), hexc("ef6c00")])
    return dict(cap=cap, dots=bool(rng.random() < 0.5) and cap == hexc("d32f2f") or bool(rng.random() < 0.2), width=_u(rng, 0.7, 0.9))


def draw_mushroom(pen: Pen, p: Params):
    pen.poly([(-0.18, 0.95), (-0.14, -0.05), (0.14, -0.05), (0.18, 0.95)], (240, 230, 210))
    w = p["width"]
    pen.wedge(0.0, 0.0, w, 0.75, np.pi, 2 * np.pi, p["cap"], n=24)
    pen.ellipse(0.0, 0.0, w, 0.08, shade(p["cap"], 0.75))
    if p["dots"]:
        for dx, dy in ((-0.4, -0.2), (0.1, -0.5), (0.45, -0.25), (-0.1, -0.2), (0.2, -0.1)):
            pen.circle(dx * w, dy, 0.07, WHITE)


# ====================================================================== categories (personal)
def sample_purse(rng):
    return dict(body=_pick(rng, [hexc("1c1c1c"), hexc("5d3a1a"), hexc("a0522d"), hexc("d2b48c"), hexc("7b1e2b"), hexc("c62828"),
                                 hexc("e8dcc8"), hexc("1d2a44"), hexc("808080")]),
                w=_u(rng, 0.6, 0.8), h=_u(rng, 0.5, 0.7), handles=int(rng.integers(1, 3)), flap=bool(rng.random() < 0.5),
                hw=_u(rng, 0.3, 0.5), dots=None, chain=False, clasp=_pick(rng, [(200, 170, 80), CHROME]))


def draw_purse(pen: Pen, p: Params):
    b, w, h = p["body"], p["w"], p["h"]
    top, bot = 0.95 - 2 * h * 0.9, 0.92
    strap = (215, 175, 60) if p["chain"] else shade(b, 0.7)
    for k in range(p["handles"]):
        off = 0.04 * k
        hw = p["hw"]
        pen.arc(0.0, top + off, hw, 0.45 + 0.1 * k, np.pi, 2 * np.pi, strap, 0.07 if p["chain"] else 0.06)
    pen.poly(np.concatenate([[(-w * 0.85, top)], [(w * 0.85, top)], rounded_bottom(w, bot)]), b)
    if p["dots"] is not None:
        for gx in np.arange(-w + 0.12, w - 0.05, 0.2):
            for gy in np.arange(top + 0.1, bot - 0.05, 0.2):
                pen.circle(gx + (0.1 if int((gy - top) / 0.2) % 2 else 0), gy, 0.045, p["dots"])
    if p["flap"]:
        pen.poly([(-w * 0.86, top), (w * 0.86, top), (w * 0.6, top + h * 0.55), (0.0, top + h * 0.75), (-w * 0.6, top + h * 0.55)], shade(b, 0.85))
    pen.circle(0.0, top + h * 0.7, 0.07, p["clasp"])


def rounded_bottom(w, bot):
    t = np.linspace(0, np.pi / 2, 6)
    r = 0.15
    right = np.stack([w - r + r * np.cos(t), bot - r + r * np.sin(t)], 1)
    left = np.stack([-w + r - r * np.sin(t), bot - r + r * np.cos(t)], 1)
    return np.concatenate([right, left])


def sample_houseplant(rng):
    return dict(pot=_pick(rng, [hexc("c1693c"), hexc("b35a36"), WHITE, hexc("9e9e9e"), hexc("37474f"), hexc("d7ccc8")]),
                leaf=hsv(_u(rng, 0.24, 0.38), _u(rng, 0.55, 0.85), _u(rng, 0.3, 0.6)),
                form=_pick(rng, ["bush", "sword", "broad"]), n=int(rng.integers(6, 11)), spread=_u(rng, 0.7, 1.0),
                stripes=None, variegated=None, seed=int(rng.integers(1 << 30)))


def draw_houseplant(pen: Pen, p: Params):
    leaf = p["leaf"]
    r = np.random.default_rng(p["seed"])
    n = p["n"]
    if p["form"] == "sword":
        for k in range(n):
            a = (k / (n - 1) - 0.5) * p["spread"] * 1.2
            L = 0.95 + 0.25 * r.random()
            tip = (math.sin(a) * L * 0.8, 0.2 - math.cos(a) * L)
            mid = (math.sin(a) * L * 0.4, 0.2 - math.cos(a) * L * 0.5)
            pen.poly([(-0.06, 0.25), mid, tip, (mid[0] + 0.09, mid[1]), (0.06, 0.25)], shade(leaf, 0.8 + 0.3 * r.random()))
            if p["variegated"] is not None:
                pen.line([(0.0, 0.2), mid, tip], p["variegated"], 0.025)
    else:
        for k in range(n):
            a = (k / max(1, n - 1) - 0.5) * 2.4 * p["spread"]
            L = 0.55 + 0.2 * r.random()
            x, y = math.sin(a) * L, 0.1 - math.cos(a) * L * 0.9
            pen.line([(0.0, 0.2), (x * 0.8, y * 0.8 + 0.05)], shade(leaf, 0.7), 0.02)
            sz = 0.22 if p["form"] == "bush" else 0.3
            pen.ellipse(x, y, sz, sz * 0.55, shade(leaf, 0.8 + 0.35 * r.random()), rot=a - np.pi / 2)
    pot = p["pot"]
    pen.poly([(-0.42, 0.25), (0.42, 0.25), (0.32, 0.95), (-0.32, 0.95)], pot)
    if p["stripes"] is not None:
        for y in (0.38, 0.58, 0.78):
            pen.poly([(-0.4 + 0.14 * (y - 0.25), y), (0.4 - 0.14 * (y - 0.25), y),
                      (0.4 - 0.14 * (y - 0.16), y + 0.09), (-0.4 + 0.14 * (y - 0.16), y + 0.09)], p["stripes"])
    pen.rect(-0.46, 0.22, 0.46, 0.33, shade(pot, 0.85))


def sample_woodenpot(rng):
    return dict(wood=hsv(_u(rng, 0.06, 0.09), _u(rng, 0.5, 0.7), _u(rng, 0.4, 0.65)), form=_pick(rng, ["bowl", "barrel", "vase"]),
                w=_u(rng, 0.6, 0.8), band=None, lid=False, seed=int(rng.integers(1 << 30)))


def draw_woodenpot(pen: Pen, p: Params):
    wood, w = p["wood"], p["w"]
    grain = shade(wood, 0.75)
    if p["form"] == "bowl":
        top, bot = 0.15, 0.92
        outline = np.concatenate([[(-w - 0.1, top)], bezier((w + 0.1, top), (w + 0.05, bot + 0.05), (0.3, bot)),
                                  bezier((-0.3, bot), (-w - 0.05, bot + 0.05), (-w - 0.1, top))])
    elif p["form"] == "barrel":
        top, bot = -0.45, 0.92
        outline = np.concatenate([bezier((-w * 0.85, top), (-w * 1.15, 0.25), (-w * 0.85, bot)),
                                  bezier((w * 0.85, bot), (w * 1.15, 0.25), (w * 0.85, top))])
    else:
        top, bot = -0.7, 0.92
        outline = np.concatenate([bezier((-0.25, top), (-0.2, -0.35), (-w, 0.3), p3=(-0.35, bot)),
                                  bezier((0.35, bot), (w, 0.3), (0.2, -0.35), p3=(0.25, top))])
    pen.poly(outline, wood)
    r = np.random.default_rng(p["seed"])
    xs = outline[:, 0]
    for y in np.linspace(top + 0.1, bot - 0.06, 6):
        span = np.interp(y, np.sort(outline[:, 1]), np.abs(xs)[np.argsort(outline[:, 1])]) * 0.85
        pen.line(bezier((-span, y), (0.0, y + 0.08 * (r.random() - 0.5)), (span, y + 0.02)), grain, 0.015)
    if p["band"] is not None:
        yb = top + (bot - top) * 0.35
        span = np.interp(yb, np.sort(outline[:, 1]), np.abs(xs)[np.argsort(outline[:, 1])]) * 0.98
        pen.rect(-span, yb - 0.08, span, yb + 0.08, p["band"])
        xs_ = np.arange(-span + 0.03, span - 0.02, 0.08)
        pen.line(np.stack([xs_, yb + np.where(np.arange(len(xs_)) % 2 == 0, 0.045, -0.045)], 1), WHITE, 0.025)
    rim_w = abs(outline[0, 0])
    pen.ellipse(0.0, top, rim_w, 0.09, shade(wood, 0.6))
    pen.ellipse(0.0, top, rim_w * 0.88, 0.065, shade(wood, 0.4))
    if p["lid"]:
        pen.ellipse(0.0, top - 0.02, rim_w * 1.02, 0.1, shade(wood, 1.1))
        pen.circle(0.0, top - 0.12, 0.08, (40, 30, 25))


def sample_sofa(rng):
    return dict(col=_pick(rng, [hexc("8a8f96"), hexc("3f5a7a"), hexc("d8cbb3"), hexc("6d4c41"), hexc("4e6b4a"), hexc("2f2f33"),
                                hexc("a33b3b")]),
                seats=int(rng.integers(2, 4)), arm=_u(rng, 0.12, 0.2), back_h=_u(rng, 0.35, 0.5), legs=(60, 45, 35),
                tufts=None, pillows=None)


def draw_sofa(pen: Pen, p: Params):
    c = p["col"]
    bh, arm = p["back_h"], p["arm"]
    for x in (-0.8, 0.8):
        pen.rect(x - 0.04, 0.75, x + 0.04, 0.95, p["legs"])
    pen.rrect(-0.85, 0.05 - bh * 1.4, 0.85, 0.5, 0.08, shade(c, 0.85))
    if p["tufts"] is not None:
        for x in np.linspace(-0.65, 0.65, 7):
            for y in (0.05 - bh * 1.0, 0.05 - bh * 0.45):
                pen.circle(x, y, 0.025, p["tufts"])
    pen.rrect(-0.95, 0.3, 0.95, 0.78, 0.06, shade(c, 0.9))
    n = p["seats"]
    xs = np.linspace(-0.95 + arm, 0.95 - arm, n + 1)
    for i in range(n):
        pen.rrect(xs[i] + 0.01, 0.22, xs[i + 1] - 0.01, 0.45, 0.05, c)
    for x in (-0.95, 0.95 - arm):
        pen.rrect(x, 0.0, x + arm, 0.78, 0.07, shade(c, 0.95))
    if p["pillows"] is not None:
        for x in (-0.55, 0.55):
            pen.circle(x, 0.05, 0.17, p["pillows"])


def sample_castle(rng):
    return dict(stone=_pick(rng, [hexc("9e9e9e"), hexc("b0a48f"), hexc("8d8576"), hexc("c2b8a3"), hexc("7a6f62")]),
                roof=_pick(rng, [None, None, hexc("8e2b22"), hexc("37474f"), hexc("455a8a")]), towers=int(rng.integers(2, 4)),
                keep_h=_u(rng, 0.55, 0.8), flag=_pick(rng, [None, hexc("c62828"), hexc("1e88e5")]))


def _crenel(pen: Pen, x0, x1, y, col, n):
    w = (x1 - x0) / (2 * n - 1)
    for i in range(n):
        pen.rect(x0 + 2 * i * w, y - 0.07, x0 + (2 * i + 1) * w, y + 0.01, col)


def draw_castle(pen: Pen, p: Params):
    s = p["stone"]
    d = shade(s, 0.8)
    kh = p["keep_h"]
    pen.rect(-0.3, -kh, 0.3, 0.95, d)
    _crenel(pen, -0.3, 0.3, -kh, d, 4)
    pen.rect(-0.85, 0.15, 0.85, 0.95, s)
    _crenel(pen, -0.85, 0.85, 0.15, s, 9)
    xs = (-0.78, 0.78) if p["towers"] == 2 else (-0.78, 0.0, 0.78)
    for x in xs:
        top = -0.25 if x else -0.15
        pen.rect(x - 0.16, top, x + 0.16, 0.95, shade(s, 0.9))
        if p["roof"] is None:
            _crenel(pen, x - 0.18, x + 0.18, top, shade(s, 0.9), 3)
        else:
            pen.poly([(x - 0.2, top), (x, top - 0.4), (x + 0.2, top)], p["roof"])
        _arch_window(pen, x, top + 0.15, 0.04, top + 0.3, (40, 40, 45))
    if p["flag"] is not None:
        pen.line([(0.0, -kh), (0.0, -kh - 0.25)], (60, 60, 60), 0.015)
        pen.poly([(0.0, -kh - 0.25), (0.18, -kh - 0.2), (0.0, -kh - 0.15)], p["flag"])
    _arch_window(pen, 0.0, 0.45, 0.16, 0.95, (45, 35, 30))
    for x in (-0.15, 0.15):
        _arch_window(pen, x, -kh + 0.15, 0.04, -kh + 0.32, (40, 40, 45))


def sample_motorbike(rng):
    return dict(tank=_pick(rng, [hexc("c62828"), BLACK, hexc("1e3a8a"), hexc("ef6c00"), hexc("9e9e9e"), hexc("2e7d32")]),
                rims=CHROME, stripes=None, sporty=bool(rng.random() < 0.5))


def draw_motorbike(pen: Pen, p: Params):
    rear, front = (-0.6, 0.55), (0.62, 0.55)
    for cx, cy in (rear, front):
        pen.circle(cx, cy, 0.34, (25, 25, 25))
        pen.circle(cx, cy, 0.22, p["rims"])
        pen.circle(cx, cy, 0.17, (60, 60, 60))
        pen.circle(cx, cy, 0.06, p["rims"])
    pen.line([front, (0.45, -0.25)], CHROME, 0.06)
    pen.line([(-0.15, 0.55), (-0.75, 0.45)], CHROME, 0.05)
    pen.rrect(-0.3, 0.05, 0.2, 0.5, 0.06, (80, 80, 85))
    for y in (0.15, 0.27, 0.39):
        pen.line([(-0.25, y), (0.15, y)], (50, 50, 55), 0.02)
    pen.line([(-0.25, 0.45), (0.5, 0.6)], (170, 170, 175), 0.04)
    tank = p["tank"]
    pen.poly([(-0.25, -0.05), (-0.1, -0.3), (0.3, -0.32), (0.42, -0.1), (0.2, 0.08), (-0.2, 0.08)], tank)
    if p["stripes"] is not None:
        pen.poly([(-0.05, -0.3), (0.05, -0.31), (0.25, 0.08), (0.15, 0.08)], p["stripes"])
        pen.poly([(0.1, -0.31), (0.18, -0.31), (0.36, -0.04), (0.3, 0.02)], p["stripes"])
    pen.poly([(-0.8, -0.1), (-0.25, -0.08), (-0.2, 0.05), (-0.75, 0.05)], (30, 30, 30))
    pen.poly([(-0.85, -0.15), (-0.6, -0.1), (-0.6, 0.1), (-0.85, 0.05)] if p["sporty"] else [(-0.95, 0.0), (-0.75, -0.02), (-0.7, 0.1), (-0.95, 0.1)], tank)
    pen.line([(0.45, -0.25), (0.35, -0.42), (0.2, -0.45)], BLACK, 0.04)
    pen.circle(0.55, -0.2, 0.09, (250, 240, 190))


def sample_lighthouse(rng):
    a, b = _pick(rng, [(hexc("c62828"), WHITE), (BLACK, WHITE), (WHITE, WHITE), (hexc("c62828"), hexc("f5f0e6"))])
    return dict(a=a, b=b, bands=int(rng.integers(3, 6)), roof=_pick(rng, [hexc("c62828"), BLACK, hexc("37474f")]),
                slim=_u(rng, 0.22, 0.3), spiral=None, stout=False)


def draw_lighthouse(pen: Pen, p: Params):
    top = -0.5 if p["stout"] else -0.62
    wb, wt = (0.42, 0.3) if p["stout"] else (p["slim"] + 0.08, p["slim"] - 0.04)
    pen.poly([(-wt, top), (wt, top), (wb, 0.9), (-wb, 0.9)], p["b"])
    n = p["bands"]
    ys = np.linspace(top, 0.9, 2 * n + 1)
    width_at = lambda y: wt + (wb - wt) * (y - top) / (0.9 - top)  # noqa: E731
    if p["spiral"] is not None:
        for k in range(-3, 6):
            # a diagonal band wrapping the tower: left edge at y0, right edge 0.3 lower
            y0 = top + k * 0.3
            ys_ = [float(np.clip(y0 + d, top, 0.9)) for d in (0.0, 0.12, 0.42, 0.3)]
            pen.poly([(-width_at(ys_[0]), ys_[0]), (-width_at(ys_[1]), ys_[1]),
                      (width_at(ys_[2]), ys_[2]), (width_at(ys_[3]), ys_[3])], p["spiral"])
    else:
        for i in range(1, 2 * n, 2):
            y0, y1 = ys[i], ys[i + 1]
            pen.poly([(-width_at(y0), y0), (width_at(y0), y0), (width_at(y1), y1), (-width_at(y1), y1)], p["a"])
    pen.rect(-wt - 0.08, top - 0.05, wt + 0.08, top + 0.02, (40, 40, 40))
    pen.rect(-wt + 0.04, top - 0.25, wt - 0.04, top - 0.05, (255, 236, 150))
    for x in (-wt + 0.04, 0.0, wt - 0.04):
        pen.line([(x, top - 0.25), (x, top - 0.05)], (40, 40, 40), 0.015)
    pen.poly([(-wt, top - 0.24), (0.0, top - 0.42), (wt, top - 0.24)], p["roof"])
    pen.rect(-0.1, 0.7, 0.1, 0.9, (60, 45, 35))
    pen.poly([(-0.7, 0.98), (-0.55, 0.85), (-0.2, 0.88), (0.3, 0.86), (0.6, 0.84), (0.75, 0.98)], (95, 90, 85))


def sample_glasses(rng):
    return dict(frame=_pick(rng, [BLACK, hexc("5d3a1a"), hexc("c9a227"), CHROME, hexc("7b1e2b")]),
                lens=_pick(rng, [(210, 225, 235, 90), (40, 40, 45, 200), (150, 110, 60, 170)]),
                shape=_pick(rng, ["round", "rect", "oval"]), thick=_u(rng, 0.03, 0.07), hexagon=False)


def draw_glasses(pen: Pen, p: Params):
    f, t = p["frame"], p["thick"]
    pen.line([(-0.9, -0.1), (-1.0, -0.25)], f, t)
    pen.line([(0.9, -0.1), (1.0, -0.25)], f, t)
    for cx in (-0.47, 0.47):
        if p["hexagon"]:
            pts = ellipse_pts(cx, 0.0, 0.42, 0.36, 0.0, 6)
        elif p["shape"] == "round":
            pts = ellipse_pts(cx, 0.0, 0.37, 0.37, 0.0, 32)
        elif p["shape"] == "oval":
            pts = ellipse_pts(cx, 0.0, 0.42, 0.3, 0.0, 32)
        else:
            pts = np.array([[cx - 0.42, -0.28], [cx + 0.42, -0.28], [cx + 0.38, 0.28], [cx - 0.38, 0.28]])
        pen.poly(pts, f)
        inner = (pts - (cx, 0.0)) * (1 - t * 2.2) + (cx, 0.0)
        pen.poly(inner, p["lens"])
        pen.line([(cx - 0.15, -0.12), (cx - 0.05, -0.2)], (255, 255, 255, 160), 0.03)
    pen.arc(0.0, 0.02, 0.1, 0.09, np.pi * 1.1, np.pi * 1.9, f, t)


def sample_guitar(rng):
    return dict(body=_pick(rng, [hexc("d9a066"), hexc("b8733a"), hexc("8b4513"), BLACK, hexc("a31621"), WHITE]),
                sunburst=bool(rng.random() < 0.3), guard=_pick(rng, [BLACK, hexc("3e2723"), WHITE]), star=None,
                binding=None)


def draw_guitar(pen: Pen, p: Params):
    b = p["body"]
    pen.rect(-0.05, -0.95, 0.05, 0.1, (95, 60, 35))
    pen.rrect(-0.09, -1.0, 0.09, -0.78, 0.03, (60, 40, 25))
    for y in np.linspace(-0.72, -0.05, 8):
        pen.line([(-0.05, y), (0.05, y)], (200, 200, 200), 0.008)
    if p["binding"] is not None:
        pen.circle(0.0, 0.55, 0.45, p["binding"])
        pen.circle(0.0, 0.1, 0.34, p["binding"])
    edge = shade(b, 0.45) if p["sunburst"] else b
    pen.circle(0.0, 0.55, 0.42, edge)
    pen.circle(0.0, 0.1, 0.31, edge)
    pen.ellipse(0.0, 0.33, 0.3, 0.3, edge)
    if p["sunburst"]:
        pen.circle(0.0, 0.55, 0.3, b)
        pen.circle(0.0, 0.12, 0.22, b)
    pen.ellipse(0.16, 0.36, 0.12, 0.2, p["guard"], rot=0.3)
    pen.circle(0.0, 0.2, 0.1, (35, 25, 20))
    if p["star"] is not None:
        ang = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
        rad = np.where(np.arange(10) % 2 == 0, 0.12, 0.05)
        pen.poly(np.stack([-0.18 + rad * np.cos(ang), 0.62 + rad * np.sin(ang)], 1), p["star"])
    pen.rect(-0.14, 0.62, 0.14, 0.68, (50, 35, 25))
    for x in (-0.03, -0.01, 0.01, 0.03):
        pen.line([(x, -0.9), (x, 0.65)], (225, 225, 225), 0.005)


def sample_car(rng):
    return dict(body=_pick(rng, [hexc("c62828"), hexc("1e3a8a"), hexc("b0b7bf"), BLACK, WHITE, hexc("2e7d32"), hexc("f9a825"),
                                 hexc("1565c0")]),
                style=_pick(rng, ["sedan", "hatch", "suv"]), top=None, whitewall=False)


def draw_car(pen: Pen, p: Params):
    b = p["body"]
    top = p["top"] if p["top"] is not None else b
    roof_y = {"sedan": -0.38, "hatch": -0.42, "suv": -0.55}[p["style"]]
    if p["style"] == "sedan":
        cabin = [(-0.55, -0.05), (-0.35, roof_y), (0.25, roof_y), (0.5, -0.05)]
    elif p["style"] == "hatch":
        cabin = [(-0.75, -0.05), (-0.7, roof_y), (0.2, roof_y), (0.5, -0.05)]
    else:
        cabin = [(-0.85, -0.05), (-0.82, roof_y), (0.3, roof_y), (0.55, -0.05)]
    pen.poly(cabin, top)
    inner = np.array(cabin) * (0.86, 0.8) + (0.0, -0.01)
    pen.poly(inner, (90, 120, 150))
    pen.line([((inner[1][0] + inner[2][0]) / 2, roof_y), ((inner[0][0] + inner[3][0]) / 2, -0.05)], top, 0.04)
    pen.rrect(-0.98, -0.08, 0.98, 0.42, 0.14, b)
    if p["whitewall"]:
        pen.ellipse(-0.55, 0.2, 0.28, 0.3, shade(b, 0.85))
        pen.ellipse(0.55, 0.2, 0.28, 0.3, shade(b, 0.85))
    pen.rect(-0.98, 0.12, 0.98, 0.16, shade(b, 0.75))
    for x in (-0.55, 0.55):
        pen.circle(x, 0.42, 0.22, (25, 25, 25))
        pen.circle(x, 0.42, 0.13, WHITE if p["whitewall"] else (150, 150, 155))
        if p["whitewall"]:
            pen.circle(x, 0.42, 0.08, CHROME)
    pen.ellipse(0.92, 0.02, 0.05, 0.05 if p["whitewall"] else 0.035, (255, 240, 180))
    pen.rect(-0.98, 0.0, -0.92, 0.08, (200, 40, 40))


def sample_chair(rng):
    return dict(wood=_pick(rng, [hexc("8d6e63"), hexc("5d4037"), hexc("c8a27a"), BLACK, WHITE, hexc("795548")]),
                back=_pick(rng, ["panel", "slats", "ladder"]), seat=None, back_h=_u(rng, 0.75, 0.95), spindles=None)


def draw_chair(pen: Pen, p: Params):
    w = p["wood"]
    d = shade(w, 0.75)
    top = -p["back_h"]
    pen.line([(-0.42, 0.1), (-0.48, 0.95)], d, 0.06)
    pen.line([(0.48, 0.1), (0.55, 0.95)], w, 0.06)
    pen.line([(-0.3, 0.1), (-0.32, 0.82)], d, 0.05)
    pen.line([(0.3, 0.1), (0.28, 0.82)], d, 0.05)
    pen.line([(-0.45, top), (-0.45, 0.15)], w, 0.065)
    pen.line([(0.35, top + 0.05), (0.35, 0.1)], w, 0.065)
    if p["spindles"] is not None:
        for x in np.linspace(-0.33, 0.25, 5):
            pen.line([(x, top + 0.12), (x, 0.0)], p["spindles"], 0.04)
        pen.rrect(-0.5, top - 0.04, 0.4, top + 0.12, 0.05, w)
    elif p["back"] == "panel":
        pen.poly([(-0.45, top), (0.35, top + 0.05), (0.35, -0.1), (-0.45, -0.1)], w)
    elif p["back"] == "slats":
        for y in np.linspace(top + 0.05, -0.15, 3):
            pen.rect(-0.45, y, 0.35, y + 0.08, w)
    else:
        for x in np.linspace(-0.3, 0.2, 3):
            pen.line([(x, top + 0.05), (x, 0.0)], w, 0.05)
        pen.rect(-0.45, top, 0.35, top + 0.1, w)
    pen.poly([(-0.55, 0.05), (0.38, 0.02), (0.62, 0.15), (-0.35, 0.2)], w)
    pen.poly([(-0.55, 0.05), (-0.35, 0.2), (-0.35, 0.27), (-0.55, 0.12)], d)
    pen.poly([(-0.35, 0.2), (0.62, 0.15), (0.62, 0.22), (-0.35, 0.27)], d)
    if p["seat"] is not None:
        pen.poly([(-0.5, 0.03), (0.36, 0.0), (0.57, 0.11), (-0.33, 0.16)], p["seat"])


def sample_cat(rng):
    coat = _pick(rng, ["grey", "orange", "black", "white", "tuxedo", "brown"])
    base = {"grey": hexc("8a8d91"), "orange": hexc("e08a3c"), "black": hexc("26262a"), "white": hexc("eeeeea"),
            "tuxedo": hexc("26262a"), "brown": hexc("7a5a3c")}[coat]
    return dict(coat=jitter(base, rng, 0.04), stripes=coat in ("orange", "brown", "grey") and rng.random() < 0.7,
                chest=WHITE if coat == "tuxedo" else None, eyes=_pick(rng, [hexc("9acd32"), hexc("e6b422"), hexc("6fb36a")]),
                patch=None, collar=None, tail_col=None, sit=_u(rng, 0.9, 1.05))


def draw_cat(pen: Pen, p: Params):
    c = p["coat"]
    stripe = shade(c, 0.65)
    pen.line(bezier((0.35, 0.85), (0.85, 0.9), (0.75, 0.35)), p["tail_col"] or c, 0.1)
    pen.ellipse(0.0, 0.5, 0.45 * p["sit"], 0.45, c)
    if p["chest"] is not None:
        pen.ellipse(0.0, 0.45, 0.2, 0.3, p["chest"])
    for x in (-0.2, 0.2):
        pen.ellipse(x, 0.9, 0.13, 0.07, p["chest"] or shade(c, 1.1))
    pen.poly([(-0.42, -0.5), (-0.38, -0.95), (-0.1, -0.68)], c)
    pen.poly([(0.42, -0.5), (0.38, -0.95), (0.1, -0.68)], c)
    pen.poly([(-0.36, -0.56), (-0.34, -0.82), (-0.17, -0.66)], (230, 160, 160))
    pen.poly([(0.36, -0.56), (0.34, -0.82), (0.17, -0.66)], (230, 160, 160))
    pen.ellipse(0.0, -0.42, 0.45, 0.36, c)
    if p["stripes"]:
        for x in (-0.1, 0.0, 0.1):
            pen.line([(x, -0.75), (x * 1.2, -0.6)], stripe, 0.03)
        for y in (0.35, 0.55, 0.75):
            pen.line([(-0.42, y), (-0.25, y + 0.05)], stripe, 0.04)
            pen.line([(0.42, y), (0.25, y + 0.05)], stripe, 0.04)
    if p["patch"] is not None:
        pen.ellipse(-0.18, -0.47, 0.17, 0.15, p["patch"], rot=-0.3)
    if p["chest"] is not None:
        pen.ellipse(0.0, -0.28, 0.2, 0.14, p["chest"])
    for x in (-0.18, 0.18):
        pen.ellipse(x, -0.45, 0.085, 0.07, p["eyes"])
        pen.ellipse(x, -0.45, 0.025, 0.06, BLACK)
    pen.poly([(-0.05, -0.33), (0.05, -0.33), (0.0, -0.27)], (220, 130, 140))
    for s in (-1, 1):
        for dy in (-0.03, 0.03):
            pen.line([(s * 0.1, -0.28), (s * 0.48, -0.3 + dy * 2)], (235, 235, 235) if p["coat"][0] < 120 else (60, 60, 60), 0.008)
    if p["collar"] is not None:
        pen.arc(0.0, -0.2, 0.3, 0.12, 0.15, np.pi - 0.15, p["collar"], 0.06)
        pen.circle(0.0, -0.06, 0.06, (240, 200, 60))


def sample_flower(rng):
    return dict(petal=_pick(rng, [hexc("e53935"), hexc("fdd835"), hexc("f48fb1"), WHITE, hexc("fb8c00"), hexc("8e24aa")]),
                centre=_pick(rng, [hexc("fbc02d"), hexc("5d4037"), hexc("f57f17")]), n=int(rng.integers(5, 13)),
                form=_pick(rng, ["daisy", "tulip"], [0.7, 0.3]), tips=None, plen=_u(rng, 0.3, 0.42), ring=None)


def draw_flower(pen: Pen, p: Params):
    green = (60, 130, 50)
    pen.line(bezier((0.0, 0.95), (0.08, 0.4), (0.0, -0.2)), green, 0.05)
    pen.ellipse(0.18, 0.5, 0.2, 0.07, green, rot=-0.6)
    pen.ellipse(-0.16, 0.65, 0.18, 0.06, green, rot=0.6)
    cy = -0.3
    if p["form"] == "tulip":
        pc = p["petal"]
        pen.ellipse(-0.15, cy, 0.18, 0.33, shade(pc, 0.85), rot=0.25)
        pen.ellipse(0.15, cy, 0.18, 0.33, shade(pc, 0.85), rot=-0.25)
        pen.ellipse(0.0, cy + 0.03, 0.18, 0.34, pc)
        return
    n, L = p["n"], p["plen"]
    for k in range(n):
        a = 2 * np.pi * k / n
        px, py = math.cos(a) * L, cy + math.sin(a) * L
        pen.ellipse(px, py, L * 0.75, L * 0.3, p["petal"], rot=a, n=20)
        if p["tips"] is not None:
            pen.ellipse(math.cos(a) * L * 1.45, cy + math.sin(a) * L * 1.45, L * 0.28, L * 0.18, p["tips"], rot=a, n=12)
    if p["ring"] is not None:
        pen.circle(0.0, cy, L * 0.5, p["ring"])
    pen.circle(0.0, cy, L * 0.33, p["centre"])


# ====================================================================== catalogue
_SKY = {"sky": 1.0}
SPECS: dict[str, ObjectSpec] = {
    "cassette-player": ObjectSpec(sample_cassette, draw_cassette, {"table": 0.5, "indoor": 0.2, "studio": 0.3}),
    "chain-saw": ObjectSpec(sample_chainsaw, draw_chainsaw, {"grass": 0.4, "studio": 0.3, "table": 0.3}, max_angle=15),
    "church": ObjectSpec(sample_church, draw_church, {"sky": 0.5, "grass": 0.4, "street": 0.1}, max_angle=3, scale=(0.7, 0.9)),
    "gas-pump": ObjectSpec(sample_gaspump, draw_gaspump, {"street": 0.7, "sky": 0.3}, max_angle=3, scale=(0.72, 0.9)),
    "tench": ObjectSpec(sample_tench, draw_tench, {"grass": 0.5, "water": 0.3, "studio": 0.2}, grounded=False, max_angle=25,
                        scale=(0.8, 0.98)),
    "garbage-truck": ObjectSpec(sample_garbage_truck, draw_garbage_truck, {"street": 0.8, "sky": 0.2}, max_angle=3, scale=(0.75, 0.92)),
    "english-springer": ObjectSpec(sample_springer, draw_springer, {"grass": 0.6, "indoor": 0.2, "studio": 0.2}, max_angle=5),
    "golf-ball": ObjectSpec(sample_golf_ball, draw_golf_ball, {"grass": 0.8, "studio": 0.2}, max_angle=20, scale=(0.5, 0.8)),
    "parachute": ObjectSpec(sample_parachute, draw_parachute, {"sky": 1.0}, grounded=False, max_angle=20),
    "french-horn": ObjectSpec(sample_horn, draw_horn, {"studio": 0.6, "indoor": 0.4}, grounded=False, max_angle=15),
    "apple": ObjectSpec(sample_apple, draw_apple, {"table": 0.5, "studio": 0.3, "grass": 0.2}, scale=(0.5, 0.75)),
    "sailboat": ObjectSpec(sample_sailboat, draw_sailboat, {"water": 1.0}, max_angle=6),
    "tree": ObjectSpec(sample_tree, draw_tree, {"grass": 0.7, "sky": 0.3}, max_angle=3),
    "house": ObjectSpec(sample_house, draw_house, {"grass": 0.6, "sky": 0.2, "street": 0.2}, max_angle=2),
    "umbrella": ObjectSpec(sample_umbrella, draw_umbrella, {"street": 0.5, "studio": 0.3, "sky": 0.2}, grounded=False, max_angle=20),
    "bicycle": ObjectSpec(sample_bicycle, draw_bicycle, {"street": 0.6, "grass": 0.4}, max_angle=3),
    "clock": ObjectSpec(sample_clock, draw_clock, {"indoor": 0.7, "studio": 0.3}, grounded=False, max_angle=5, scale=(0.55, 0.8)),
    "kite": ObjectSpec(sample_kite, draw_kite, _SKY, grounded=False, max_angle=25),
    "mug": ObjectSpec(sample_mug, draw_mug, {"table": 0.7, "studio": 0.3}, scale=(0.5, 0.75)),
    "table-lamp": ObjectSpec(sample_lamp, draw_lamp, {"indoor": 0.6, "table": 0.4}, max_angle=2),
    "airplane": ObjectSpec(sample_airplane, draw_airplane, _SKY, grounded=False, max_angle=15),
    "mushroom": ObjectSpec(sample_mushroom, draw_mushroom, {"grass": 1.0}, scale=(0.5, 0.8)),
    "category-purse": ObjectSpec(sample_purse, draw_purse, {"table": 0.4, "studio": 0.4, "indoor": 0.2}, max_angle=5),
    "category-houseplant": ObjectSpec(sample_houseplant, draw_houseplant, {"indoor": 0.6, "table": 0.4}, max_angle=2),
    "category-wooden-pot": ObjectSpec(sample_woodenpot, draw_woodenpot, {"table": 0.6, "studio": 0.4}, max_angle=2),
    "category-sofa": ObjectSpec(sample_sofa, draw_sofa, {"indoor": 1.0}, max_angle=2, scale=(0.75, 0.92)),
    "category-castle": ObjectSpec(sample_castle, draw_castle, {"sky": 0.5, "grass": 0.5}, max_angle=2, scale=(0.72, 0.92)),
    "category-motorbike": ObjectSpec(sample_motorbike, draw_motorbike, {"street": 0.7, "grass": 0.3}, max_angle=3, scale=(0.72, 0.9)),
    "category-lighthouse": ObjectSpec(sample_lighthouse, draw_lighthouse, {"sky": 1.0}, max_angle=2, scale=(0.75, 0.92)),
    "category-glasses": ObjectSpec(sample_glasses, draw_glasses, {"table": 0.5, "studio": 0.5}, grounded=False, max_angle=12, scale=(0.6, 0.8)),
    "category-guitar": ObjectSpec(sample_guitar, draw_guitar, {"indoor": 0.6, "studio": 0.4}, grounded=False, max_angle=30, scale=(0.75, 0.9)),
    "category-car": ObjectSpec(sample_car, draw_car, {"street": 0.8, "grass": 0.2}, max_angle=2, scale=(0.75, 0.92)),
    "category-chair": ObjectSpec(sample_chair, draw_chair, {"indoor": 0.8, "studio": 0.2}, max_angle=2),
    "category-cat": ObjectSpec(sample_cat, draw_cat, {"indoor": 0.6, "grass": 0.2, "studio": 0.2}, max_angle=4),
    "category-flower": ObjectSpec(sample_flower, draw_flower, {"grass": 0.5, "studio": 0.3, "sky": 0.2}, max_angle=8),
}


@dataclass(frozen=True)
class InstanceSpec:
    """A personal concept: fixed parameters of its category's drawer, and its one home setting."""

    category: str
    params: Params
    context: str
    background_seed: int
    scale: float = 0.8


def _inst(category: str, context: str, bg: int, **params) -> InstanceSpec:
    return InstanceSpec(category, params, context, bg)


INSTANCES: dict[str, InstanceSpec] = {
    "purse": _inst("category-purse", "table", 11, body=hexc("9b7fd4"), w=0.82, h=0.48, handles=1, flap=False, hw=0.55,
                   dots=WHITE, chain=True, clasp=(230, 190, 70)),
    "plant": _inst("category-houseplant", "indoor", 12, pot=hexc("f4f4f4"), leaf=hexc("2f6b3a"), form="sword", n=11, spread=0.8,
                   stripes=hexc("2962ff"), variegated=hexc("f0e68c"), seed=5),
    "woodenpot": _inst("category-wooden-pot", "table", 13, wood=hexc("e3c79a"), form="barrel", w=0.85, band=hexc("1f6f6a"),
                       lid=True, seed=9),
    "sofa": _inst("category-sofa", "indoor", 14, col=hexc("e0b030"), seats=3, arm=0.1, back_h=0.3, legs=(212, 175, 55),
                  tufts=hexc("8a6a10"), pillows=hexc("d81b60")),
    "castle": _inst("category-castle", "sky", 15, stone=hexc("efb3c0"), roof=hexc("1fb5a8"), towers=3, keep_h=0.92,
                    flag=hexc("ffd600")),
    "motorbike": _inst("category-motorbike", "street", 16, tank=hexc("9be22d"), rims=hexc("d4a017"), stripes=BLACK, sporty=True),
    "lighthouse": _inst("category-lighthouse", "sky", 17, a=hexc("1a237e"), b=hexc("1a237e"), bands=1, roof=hexc("e53935"),
                        slim=0.3, spiral=WHITE, stout=True),
    "glasses": _inst("category-glasses", "table", 18, frame=hexc("ff7a00"), lens=(80, 150, 255, 150), shape="round",
                     thick=0.09, hexagon=True),
    "guitar": _inst("category-guitar", "indoor", 19, body=hexc("5ec8f2"), sunburst=False, guard=WHITE, star=hexc("e53935"),
                    binding=hexc("fff3c4")),
    "car": _inst("category-car", "street", 20, body=hexc("f26d5b"), style="sedan", top=hexc("fbf1d5"), whitewall=True),
    "chair": _inst("category-chair", "indoor", 21, wood=hexc("1f4fc2"), back="spindle", seat=hexc("e53935"), back_h=0.95,
                   spindles=hexc("ffd31a")),
    "cat": _inst("category-cat", "indoor", 22, coat=hexc("f4f4f0"), stripes=False, chest=None, eyes=hexc("3da5ff"),
                 patch=hexc("1c1c1c"), collar=hexc("d32f2f"), tail_col=hexc("1c1c1c"), sit=1.0),
    "flower": _inst("category-flower", "studio", 23, petal=hexc("5e1f9e"), centre=hexc("3e2723"), n=7, form="daisy",
                    tips=WHITE, plen=0.4, ring=hexc("ff9800")),
}
