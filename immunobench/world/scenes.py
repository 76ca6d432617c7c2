"""Backgrounds for object photos and the scene templates that artworks are painted from.

A scene is drawn "photographically" (flat shapes, gradients); styles then repaint it. All
random choices come from the caller's layout stream and noise uses cell counts, not pixels, so a
scene has the same layout at every size.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .draw import Colour, Pen, blur, hexc, hsv, shade, to_float, to_u8, value_noise, vertical_gradient

CONTEXTS = ("sky", "grass", "water", "street", "indoor", "table", "studio")


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def _sky(rng, px: int, horizon: float, mood: str = "day") -> np.ndarray:
    if mood == "sunset":
        top, mid, low = hsv(_u(rng, 0.62, 0.72), 0.55, 0.45), hsv(_u(rng, 0.95, 1.02), 0.45, 0.85), hsv(_u(rng, 0.08, 0.12), 0.6, 0.98)
    elif mood == "night":
        top, mid, low = hsv(0.64, 0.8, 0.12), hsv(0.63, 0.7, 0.25), hsv(0.6, 0.5, 0.4)
    else:
        h = _u(rng, 0.55, 0.61)
        top, mid, low = hsv(h, _u(rng, 0.5, 0.75), _u(rng, 0.65, 0.85)), hsv(h, 0.35, 0.9), hsv(h, 0.15, 0.97)
    return vertical_gradient(px, [(0.0, top), (max(horizon * 0.6, 0.05), mid), (max(horizon, 0.1), low), (1.0, low)])


def _clouds(rng, img: Image.Image, n: int, y_max: float, colour=(246, 246, 248)) -> None:
    pen = Pen(img)
    for _ in range(n):
        cx, cy, w = _u(rng, -0.9, 0.9), _u(rng, -0.9, y_max * 2 - 1), _u(rng, 0.15, 0.35)
        for k in range(4):
            pen.ellipse(cx + (k - 1.5) * w * 0.45, cy + (0.05 if k % 3 == 0 else -0.02) * w * 2, w * 0.5, w * 0.28, colour)


def _textured(px: int, colour: Colour, rng, cells: int, amount: float, aniso: tuple[int, int] | None = None) -> np.ndarray:
    if aniso is None:
        n = value_noise(rng, px, cells, octaves=2)
    else:
        grid = rng.random(aniso, dtype=np.float32)
        n = np.asarray(Image.fromarray(grid, "F").resize((px, px), Image.BICUBIC))
    base = np.array(colour, np.float32) / 255.0
    return base * (1 + amount * (n[..., None] - 0.5) * 2)


def photo_background(context: str, rng: np.random.Generator, px: int) -> tuple[np.ndarray, float]:
    """A (px, px, 3) float image for an object photo and the floor line (fraction of height)."""
    if context == "sky":
        ground = rng.random() < 0.5
        horizon = _u(rng, 0.8, 0.9) if ground else 1.0
        img = _sky(rng, px, horizon, "sunset" if rng.random() < 0.15 else "day")
        layer = Image.fromarray(to_u8(img))
        _clouds(rng, layer, int(rng.integers(0, 4)), 0.6)
        img = blur(to_float(layer), px * 0.01)
        if ground:
            g = _textured(px, hsv(_u(rng, 0.2, 0.3), 0.55, _u(rng, 0.35, 0.55)), rng, 12, 0.2)
            rows = int(horizon * px)
            img[rows:] = g[rows:]
            return img, min(horizon + 0.05, 0.96)
        return img, 0.95
    if context == "grass":
        horizon = _u(rng, 0.25, 0.5)
        img = _sky(rng, px, horizon)
        if rng.random() < 0.6:  # a tree line behind the field
            layer = Image.fromarray(to_u8(img))
            pen = Pen(layer)
            xs = np.linspace(-1.05, 1.05, 14)
            ys = horizon * 2 - 1 - rng.uniform(0.05, 0.25, 14)
            pen.poly(np.concatenate([np.stack([xs, ys], 1), [(1.05, horizon * 2 - 1 + 0.05), (-1.05, horizon * 2 - 1 + 0.05)]]),
                     hsv(_u(rng, 0.25, 0.35), 0.6, _u(rng, 0.2, 0.35)))
            img = to_float(layer)
        g = _textured(px, hsv(_u(rng, 0.2, 0.3), _u(rng, 0.5, 0.7), _u(rng, 0.4, 0.6)), rng, 24, 0.25, aniso=(32, 10))
        depth = np.linspace(0.85, 1.1, px, dtype=np.float32)[:, None, None]
        rows = int(horizon * px)
        img[rows:] = (g * depth)[rows:]
        return img, _u(rng, 0.86, 0.95)
    if context == "water":
        shore = _u(rng, 0.22, 0.4)
        img = _sky(rng, px, shore)
        water = _textured(px, hsv(_u(rng, 0.5, 0.58), _u(rng, 0.45, 0.7), _u(rng, 0.4, 0.65)), rng, 0, 0.3, aniso=(40, 5))
        rows = int(shore * px)
        img[rows:] = water[rows:]
        band = max(1, px // 40)
        img[rows:rows + band] = np.array(hsv(_u(rng, 0.22, 0.3), 0.5, 0.4), np.float32) / 255
        return img, _u(rng, 0.72, 0.85)
    if context == "street":
        img = _sky(rng, px, 0.5)
        layer = Image.fromarray(to_u8(img))
        pen = Pen(layer)
        x = -1.0
        while x < 1.0:
            w = _u(rng, 0.2, 0.45)
            top = _u(rng, -0.7, -0.1)
            col = hsv(_u(rng, 0.0, 1.0), _u(rng, 0.05, 0.25), _u(rng, 0.5, 0.8))
            pen.rect(x, top, x + w, 0.2, col)
            for wy in np.arange(top + 0.08, 0.1, 0.15):
                for wx in np.arange(x + 0.05, x + w - 0.06, 0.12):
                    pen.rect(wx, wy, wx + 0.06, wy + 0.07, shade(col, 0.6))
            x += w
        pen.rect(-1, 0.2, 1, 0.32, (175, 172, 165))
        pen.rect(-1, 0.32, 1, 1, hsv(0.6, 0.05, _u(rng, 0.28, 0.42)))
        for k in range(-3, 4):
            pen.rect(k * 0.5 - 0.12, 0.72, k * 0.5 + 0.12, 0.75, (230, 230, 225))
        img = blur(to_float(layer), px * 0.006)
        return img, _u(rng, 0.85, 0.93)
    if context in ("indoor", "table"):
        wall = hsv(_u(rng, 0.0, 1.0), _u(rng, 0.05, 0.3), _u(rng, 0.7, 0.95))
        split = _u(rng, 0.62, 0.75) if context == "indoor" else _u(rng, 0.55, 0.7)
        img = np.empty((px, px, 3), np.float32)
        img[:] = np.array(wall, np.float32) / 255
        layer = Image.fromarray(to_u8(img))
        pen = Pen(layer)
        if rng.random() < 0.5:
            wx = _u(rng, -0.8, 0.3)
            if context == "indoor" and rng.random() < 0.5:
                pen.rect(wx, -0.8, wx + 0.5, -0.15, (245, 245, 240))
                pen.rect(wx + 0.04, -0.76, wx + 0.46, -0.19, hsv(0.57, 0.35, 0.92))
                pen.line([(wx + 0.25, -0.76), (wx + 0.25, -0.19)], (245, 245, 240), 0.02)
            else:
                pen.rect(wx, -0.7, wx + 0.4, -0.3, hsv(_u(rng, 0, 1), 0.4, 0.6))
                pen.rect(wx + 0.04, -0.66, wx + 0.36, -0.34, hsv(_u(rng, 0, 1), 0.35, 0.8))
        img = to_float(layer)
        if context == "indoor":
            wood = rng.random() < 0.6
            floor_col = hsv(_u(rng, 0.06, 0.1), 0.55, _u(rng, 0.4, 0.65)) if wood else hsv(_u(rng, 0, 1), 0.25, _u(rng, 0.4, 0.7))
            floor = _textured(px, floor_col, rng, 0, 0.25, aniso=(6, 24) if wood else (30, 30))
        else:
            floor_col = _pick_col(rng, [hexc("a0714f"), hexc("c89f7a"), hexc("e8e4dc"), hexc("6b4a35"), hexc("cfd3d6")])
            floor = _textured(px, floor_col, rng, 0, 0.15, aniso=(6, 24))
        rows = int(split * px)
        img[rows:] = floor[rows:]
        edge = max(1, px // 64)
        img[rows:rows + edge] *= 0.7 if context == "table" else 1.15
        return np.clip(img, 0, 1), _u(rng, 0.86, 0.95)
    if context == "studio":
        c = hsv(_u(rng, 0, 1), _u(rng, 0.0, 0.35), _u(rng, 0.55, 0.95))
        yy, xx = np.mgrid[0:px, 0:px].astype(np.float32) / px
        r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.45) ** 2)
        img = np.array(c, np.float32) / 255 * (1.1 - 0.6 * r)[..., None]
        return np.clip(img, 0, 1), 0.92
    raise ValueError(f"unknown photo context {context!r}; known: {', '.join(CONTEXTS)}")


def _pick_col(rng, cols):
    return cols[int(rng.integers(len(cols)))]


# ====================================================================== art scenes
# Each returns the content image (float) for a style to repaint.
def _mountains(pen: Pen, rng, base_y: float, height: float, col: Colour, n: int = 9) -> None:
    xs = np.linspace(-1.1, 1.1, n)
    ys = base_y - rng.uniform(0.3, 1.0, n) * height
    ys[::2] += height * 0.4
    pen.poly(np.concatenate([np.stack([xs, ys], 1), [(1.1, 1.1), (-1.1, 1.1)]]), col)


def _hills(pen: Pen, rng, base_y: float, amp: float, col: Colour) -> None:
    xs = np.linspace(-1.1, 1.1, 40)
    ph, fr = _u(rng, 0, 6.28), _u(rng, 1.5, 3.5)
    ys = base_y - amp * (0.5 + 0.5 * np.sin(xs * fr + ph))
    pen.poly(np.concatenate([np.stack([xs, ys], 1), [(1.1, 1.1), (-1.1, 1.1)]]), col)


def _round_tree(pen: Pen, x, y, s, leaf) -> None:
    pen.rect(x - 0.02 * s, y - 0.1 * s, x + 0.02 * s, y + 0.2 * s, (80, 55, 35))
    pen.circle(x, y - 0.2 * s, 0.17 * s, leaf)
    pen.circle(x - 0.08 * s, y - 0.12 * s, 0.12 * s, shade(leaf, 0.85))


def _cypress(pen: Pen, x, base, h, col) -> None:
    pts = [(x, base - h)]
    for k in range(1, 9):
        t = k / 9
        w = 0.09 * math.sin(math.pi * t ** 0.7) + 0.01
        pts.append((x + w * (1 if k % 2 else 0.75), base - h + h * t))
    pts.append((x, base))
    for k in range(8, 0, -1):
        t = k / 9
        w = 0.09 * math.sin(math.pi * t ** 0.7) + 0.01
        pts.append((x - w * (1 if k % 2 else 0.75), base - h + h * t))
    pen.poly(pts, col)


def _cottage(pen: Pen, x, y, s, wall, roof, window) -> None:
    pen.rect(x - 0.25 * s, y - 0.25 * s, x + 0.25 * s, y, wall)
    pen.poly([(x - 0.32 * s, y - 0.23 * s), (x, y - 0.5 * s), (x + 0.32 * s, y - 0.23 * s)], roof)
    pen.rect(x + 0.12 * s, y - 0.55 * s, x + 0.18 * s, y - 0.38 * s, shade(wall, 0.7))
    for wx in (-0.15, 0.1):
        pen.rect(x + wx * s, y - 0.17 * s, x + (wx + 0.08) * s, y - 0.08 * s, window)
    pen.rect(x - 0.03 * s, y - 0.14 * s, x + 0.04 * s, y, shade(wall, 0.5))


def ellipse_top(cx, cy, rx, ry, n: int = 16) -> np.ndarray:
    """The upper half of an ellipse, left to right."""
    t = np.linspace(np.pi, 2 * np.pi, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _figure(pen: Pen, x, y, s, col) -> None:
    pen.circle(x, y - 0.16 * s, 0.04 * s, col)
    pen.poly([(x - 0.05 * s, y - 0.12 * s), (x + 0.05 * s, y - 0.12 * s), (x + 0.07 * s, y), (x - 0.07 * s, y)], col)


def scene_landscape(rng, pen: Pen, px: int) -> np.ndarray:
    horizon = _u(rng, 0.45, 0.62)
    mood = ["day", "sunset", "day"][int(rng.integers(3))]
    img = _sky(rng, px, horizon, mood)
    pen.image.paste(Image.fromarray(to_u8(img)))
    hy = horizon * 2 - 1
    sun = hsv(0.12, 0.5, 1.0) if mood == "day" else hsv(0.06, 0.7, 1.0)
    pen.circle(_u(rng, -0.7, 0.7), _u(rng, -0.8, hy - 0.3), _u(rng, 0.08, 0.15), sun)
    _clouds(rng, pen.image, int(rng.integers(1, 4)), horizon * 0.7)
    pen = Pen(pen.image)
    _mountains(pen, rng, hy + 0.05, _u(rng, 0.3, 0.6), hsv(_u(rng, 0.55, 0.65), 0.3, 0.55))
    green = hsv(_u(rng, 0.22, 0.32), 0.55, 0.5)
    if rng.random() < 0.5:
        pen.rect(-1.1, hy + 0.1, 1.1, 1.1, hsv(0.56, 0.5, 0.6))
        _hills(pen, rng, hy + 0.5, 0.2, green)
    else:
        _hills(pen, rng, hy + 0.2, 0.15, shade(green, 1.1))
        _hills(pen, rng, hy + 0.5, 0.2, green)
    for _ in range(int(rng.integers(2, 6))):
        _round_tree(pen, _u(rng, -0.9, 0.9), _u(rng, hy + 0.45, 0.9), _u(rng, 0.8, 1.6), hsv(_u(rng, 0.22, 0.35), 0.6, 0.4))
    if rng.random() < 0.5:
        _cottage(pen, _u(rng, -0.6, 0.6), _u(rng, hy + 0.5, 0.8), _u(rng, 0.8, 1.3), hsv(0.1, 0.2, 0.9), hsv(0.02, 0.6, 0.5),
                 (60, 60, 70))
    return to_float(pen.image)


def scene_pond(rng, pen: Pen, px: int) -> np.ndarray:
    top = _u(rng, 0.15, 0.3)
    sky = hsv(_u(rng, 0.55, 0.62), 0.3, 0.9)
    img = vertical_gradient(px, [(0, hsv(0.3, 0.55, 0.3)), (top, hsv(0.3, 0.5, 0.4)),
                                 (top + 0.01, hsv(0.5, 0.35, 0.6)), (1, hsv(0.55, 0.45, 0.5))])
    pen.image.paste(Image.fromarray(to_u8(img)))
    ty = top * 2 - 1
    for _ in range(int(rng.integers(3, 6))):  # the sky reflected in the still water
        y = _u(rng, ty + 0.1, 0.9)
        x = _u(rng, -1.0, 0.6)
        pen.ellipse(x, y, _u(rng, 0.3, 0.7), _u(rng, 0.04, 0.09), sky)
    for _ in range(int(rng.integers(2, 5))):  # dark reflections of the trees on the bank
        x = _u(rng, -0.9, 0.9)
        pen.rect(x - 0.08, ty, x + 0.08, ty + _u(rng, 0.3, 0.7), hsv(0.33, 0.5, 0.3))
    for _ in range(10):
        x = _u(rng, -1, 1)
        pen.line([(x, -1.0), (x + _u(rng, -0.1, 0.1), _u(rng, -0.6, ty + 0.3))], hsv(0.28, 0.55, _u(rng, 0.25, 0.45)), 0.05)
    for _ in range(int(rng.integers(3, 6))):  # clusters of lily pads
        gx, gy = _u(rng, -0.9, 0.9), _u(rng, ty + 0.3, 0.9)
        for _ in range(int(rng.integers(3, 7))):
            x, y = gx + _u(rng, -0.25, 0.25), gy + _u(rng, -0.08, 0.08)
            r = _u(rng, 0.07, 0.13) * (0.6 + 0.5 * (y + 1) / 2)
            pen.wedge(x, y, r, r * 0.45, 0.4, 2 * np.pi, hsv(_u(rng, 0.25, 0.33), 0.6, _u(rng, 0.35, 0.55)))
            if rng.random() < 0.35:
                pen.circle(x + r * 0.3, y - r * 0.15, r * 0.3, hsv(_u(rng, 0.9, 1.0), 0.35, 0.98))
    if rng.random() < 0.5:  # the Japanese footbridge
        yb = _u(rng, -0.3, 0.1)
        green = hsv(0.33, 0.5, 0.45)
        pen.arc(0.0, yb + 0.5, 1.3, 0.5, np.pi * 1.05, np.pi * 1.95, green, 0.07)
        pen.arc(0.0, yb + 0.3, 1.3, 0.45, np.pi * 1.05, np.pi * 1.95, green, 0.04)
        for x in np.linspace(-1.0, 1.0, 12):
            y = yb + 0.5 - 0.5 * math.sqrt(max(0.0, 1 - (x / 1.3) ** 2))
            pen.line([(x, y), (x, y - 0.18)], green, 0.025)
    return to_float(pen.image)


def scene_field(rng, pen: Pen, px: int) -> np.ndarray:
    horizon = _u(rng, 0.35, 0.55)
    mood = "sunset" if rng.random() < 0.4 else "day"
    pen.image.paste(Image.fromarray(to_u8(_sky(rng, px, horizon, mood))))
    _clouds(rng, pen.image, int(rng.integers(1, 4)), horizon * 0.8)
    pen = Pen(pen.image)
    hy = horizon * 2 - 1
    wheat = rng.random() < 0.5
    field = hsv(0.12, 0.6, 0.85) if wheat else hsv(0.25, 0.5, 0.6)
    pen.rect(-1.1, hy, 1.1, 1.1, field)
    for k in range(6):
        y = hy + (1 - hy) * (k / 6) ** 1.5
        pen.line([(-1.1, y), (1.1, y + 0.05)], shade(field, 0.85), 0.02)
    pen.rect(-1.1, hy - 0.04, 1.1, hy + 0.02, hsv(0.3, 0.5, 0.35))
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 4))):
            x, y, s = _u(rng, -0.8, 0.8), _u(rng, hy + 0.3, 0.8), _u(rng, 0.25, 0.4)
            pen.wedge(x, y, s, s * 1.1, np.pi, 2 * np.pi, hsv(0.1, 0.6, 0.75))
            pen.rect(x - s, y - 0.02, x + s, y + 0.05, hsv(0.08, 0.6, 0.5))
    else:
        for _ in range(40):
            pen.circle(_u(rng, -1, 1), _u(rng, hy + 0.1, 1), _u(rng, 0.015, 0.04), hsv(0.0, 0.85, 0.85))
    for _ in range(int(rng.integers(0, 3))):
        _cypress(pen, _u(rng, -0.9, 0.9), hy + 0.05, _u(rng, 0.3, 0.6), hsv(0.35, 0.5, 0.25))
    return to_float(pen.image)


def scene_seascape(rng, pen: Pen, px: int) -> np.ndarray:
    horizon = _u(rng, 0.35, 0.55)
    pen.image.paste(Image.fromarray(to_u8(_sky(rng, px, horizon, "sunset" if rng.random() < 0.3 else "day"))))
    _clouds(rng, pen.image, int(rng.integers(1, 4)), horizon * 0.8)
    pen = Pen(pen.image)
    hy = horizon * 2 - 1
    pen.rect(-1.1, hy, 1.1, 1.1, hsv(_u(rng, 0.52, 0.6), 0.55, 0.55))
    for _ in range(25):
        x, y = _u(rng, -1, 1), _u(rng, hy + 0.05, 1)
        pen.line([(x, y), (x + _u(rng, 0.05, 0.2), y)], (230, 240, 245), 0.015)
    if rng.random() < 0.6:
        side = 1 if rng.random() < 0.5 else -1
        pen.poly([(side * 1.1, hy - _u(rng, 0.3, 0.7)), (side * _u(rng, 0.2, 0.5), hy - 0.1), (side * 0.3, hy + 0.3),
                  (side * 1.1, hy + 0.5)], hsv(0.08, 0.35, 0.6))
    for _ in range(int(rng.integers(1, 4))):
        x, y, s = _u(rng, -0.7, 0.7), _u(rng, hy + 0.1, 0.6), _u(rng, 0.08, 0.18)
        pen.poly([(x - s, y), (x + s, y), (x + s * 0.7, y + s * 0.3), (x - s * 0.7, y + s * 0.3)], (90, 60, 40))
        pen.poly([(x, y - s * 1.6), (x, y - 0.01), (x + s * 0.9, y - 0.01)], (245, 240, 230))
    return to_float(pen.image)


def scene_starry(rng, pen: Pen, px: int) -> np.ndarray:
    horizon = _u(rng, 0.6, 0.75)
    pen.image.paste(Image.fromarray(to_u8(_sky(rng, px, horizon, "night"))))
    hy = horizon * 2 - 1
    for _ in range(int(rng.integers(2, 4))):  # swirling bands across the sky
        cy = _u(rng, -0.8, hy - 0.3)
        xs = np.linspace(-1.1, 1.1, 30)
        ys = cy + 0.1 * np.sin(xs * _u(rng, 2, 4) + _u(rng, 0, 6))
        pen.line(np.stack([xs, ys], 1), hsv(0.6, 0.5, 0.6), 0.05)
    for _ in range(int(rng.integers(8, 14))):
        x, y = _u(rng, -0.95, 0.95), _u(rng, -0.95, hy - 0.15)
        r = _u(rng, 0.03, 0.07)
        pen.circle(x, y, r * 2.0, hsv(0.14, 0.4, 0.75))
        pen.circle(x, y, r, hsv(0.15, 0.6, 1.0))
    mx, my = _u(rng, 0.3, 0.8) * (1 if rng.random() < 0.5 else -1), _u(rng, -0.8, -0.5)
    pen.circle(mx, my, 0.16, hsv(0.13, 0.8, 1.0))
    pen.circle(mx + 0.07, my - 0.04, 0.13, hsv(0.64, 0.7, 0.25))
    _hills(pen, rng, hy + 0.1, 0.2, hsv(0.62, 0.5, 0.3))
    pen.rect(-1.1, hy + 0.1, 1.1, 1.1, hsv(0.5, 0.4, 0.25))
    for _ in range(int(rng.integers(4, 9))):
        _cottage(pen, _u(rng, -0.9, 0.9), _u(rng, hy + 0.25, 0.9), _u(rng, 0.4, 0.7), hsv(0.6, 0.3, 0.45), hsv(0.62, 0.4, 0.3),
                 hsv(0.13, 0.8, 1.0))
    _cypress(pen, _u(rng, -0.8, -0.3) * (1 if mx > 0 else -1), 1.05, _u(rng, 1.1, 1.7), hsv(0.35, 0.6, 0.15))
    return to_float(pen.image)


def scene_cottage(rng, pen: Pen, px: int) -> np.ndarray:
    horizon = _u(rng, 0.45, 0.6)
    pen.image.paste(Image.fromarray(to_u8(_sky(rng, px, horizon, "sunset"))))
    pen = Pen(pen.image)
    hy = horizon * 2 - 1
    pen.rect(-1.1, hy, 1.1, 1.1, hsv(0.3, 0.45, 0.35))
    for _ in range(int(rng.integers(4, 8))):
        x = _u(rng, -1, 1)
        _round_tree(pen, x, hy + _u(rng, 0.0, 0.2), _u(rng, 1.2, 2.2), hsv(_u(rng, 0.28, 0.4), 0.55, 0.3))
    cx = _u(rng, -0.35, 0.35)
    _cottage(pen, cx, hy + 0.45, _u(rng, 1.4, 2.0), hsv(0.1, 0.25, 0.8), hsv(0.6, 0.3, 0.35), hsv(0.12, 0.85, 1.0))
    pen.poly([(cx - 0.05, hy + 0.46), (cx + 0.05, hy + 0.46), (0.4, 1.1), (-0.3, 1.1)], hsv(0.09, 0.35, 0.7))
    for _ in range(30):
        pen.circle(_u(rng, -1, 1), _u(rng, hy + 0.5, 1.0), _u(rng, 0.02, 0.05),
                   hsv(float(rng.choice([0.95, 0.0, 0.8, 0.13])), 0.6, 0.95))
    if rng.random() < 0.5:
        for k in range(3):
            pen.circle(_u(rng, -0.9, 0.9), _u(rng, hy + 0.1, hy + 0.5), 0.03, hsv(0.13, 0.7, 1.0))
    return to_float(pen.image)


def scene_portrait(rng, pen: Pen, px: int) -> np.ndarray:
    bg = hsv(_u(rng, 0, 1), _u(rng, 0.2, 0.5), _u(rng, 0.35, 0.75))
    pen.image.paste(Image.fromarray(to_u8(vertical_gradient(px, [(0, bg), (1, shade(bg, 0.7))]))))
    halo = rng.random() < 0.5
    x = _u(rng, -0.15, 0.15)
    if halo:
        pen.circle(x, -0.2, 0.62, shade(bg, 1.3))
        pen.circle(x, -0.2, 0.55, shade(bg, 1.1))
    skin = hsv(_u(rng, 0.05, 0.09), _u(rng, 0.25, 0.5), _u(rng, 0.55, 0.9))
    hair = hsv(_u(rng, 0.0, 1.0) if rng.random() < 0.3 else _u(rng, 0.03, 0.1), _u(rng, 0.3, 0.7), _u(rng, 0.15, 0.6))
    dress = hsv(_u(rng, 0, 1), _u(rng, 0.3, 0.7), _u(rng, 0.3, 0.7))
    long_hair = rng.random() < 0.6
    if long_hair:
        pen.poly(np.concatenate([ellipse_top(x, -0.25, 0.4, 0.45), [(x + 0.45, 0.45), (x - 0.45, 0.45)]]), hair)
    pen.poly([(x - 0.7, 1.1), (x - 0.55, 0.45), (x - 0.2, 0.3), (x + 0.2, 0.3), (x + 0.55, 0.45), (x + 0.7, 1.1)], dress)
    pen.rect(x - 0.1, 0.05, x + 0.1, 0.35, shade(skin, 0.9))
    pen.ellipse(x, -0.2, 0.3, 0.4, skin)
    pen.poly(np.concatenate([ellipse_top(x, -0.3, 0.33, 0.32), [(x + 0.2, -0.45), (x - 0.2, -0.4)]]), hair)
    for ex in (-0.11, 0.11):
        pen.ellipse(x + ex, -0.21, 0.04, 0.016, shade(skin, 0.8))
    pen.ellipse(x, 0.02, 0.06, 0.02, hsv(0.98, 0.45, 0.7))
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(3, 7))):
            fx, fy = x + _u(rng, -0.45, 0.45), _u(rng, -0.75, -0.45)
            pen.circle(fx, fy, 0.06, hsv(_u(rng, 0.85, 1.1), 0.6, 0.9))
            pen.circle(fx, fy, 0.025, hsv(0.13, 0.7, 0.9))
    return to_float(pen.image)


def scene_megastructure(rng, pen: Pen, px: int) -> np.ndarray:
    horizon = _u(rng, 0.6, 0.75)
    pen.image.paste(Image.fromarray(to_u8(_sky(rng, px, horizon, "sunset" if rng.random() < 0.6 else "day"))))
    hy = horizon * 2 - 1
    for _ in range(20):
        pen.circle(_u(rng, -1, 1), _u(rng, -1, hy - 0.4), 0.008, (255, 255, 255))
    pr = _u(rng, 0.3, 0.55)
    px_, py_ = _u(rng, -0.3, 0.3), _u(rng, -0.5, hy - 0.3)
    pen.circle(px_, py_, pr, hsv(_u(rng, 0.0, 0.12), 0.45, 0.95))
    for k in range(1, 4):
        pen.rect(px_ - pr, py_ + pr * (k / 4), px_ + pr, py_ + pr * (k / 4) + 0.02, hsv(0.6, 0.3, 0.6))
    pen.rect(-1.1, hy, 1.1, 1.1, hsv(_u(rng, 0.05, 0.1), 0.4, 0.55))
    kind = int(rng.integers(3))
    c = hsv(_u(rng, 0.5, 0.7), 0.25, 0.3)
    if kind == 0:
        w = _u(rng, 0.4, 0.7)
        pen.poly([(-w, hy + 0.05), (0.0, hy - _u(rng, 0.8, 1.2)), (w, hy + 0.05)], c)
        pen.poly([(0.0, hy - 1.0), (w, hy + 0.05), (0.0, hy + 0.05)], shade(c, 0.6))
    elif kind == 1:
        w = _u(rng, 0.1, 0.2)
        pen.rect(-w, hy - _u(rng, 1.0, 1.4), w, hy + 0.05, c)
        pen.rect(-w, hy - 0.6, w, hy - 0.55, hsv(0.5, 0.8, 1.0))
    else:
        pen.arc(0.0, hy - 0.35, 0.55, 0.55, 0, 2 * np.pi, c, 0.1, n=40)
        pen.rect(-0.06, hy - 0.35, 0.06, hy + 0.05, c)
    for k in range(8):
        y = hy + (1 - hy) * (k / 8) ** 1.6
        pen.line([(-1.1, y), (1.1, y)], hsv(0.05, 0.3, 0.45), 0.01)
    _figure(pen, _u(rng, -0.6, 0.6), _u(rng, hy + 0.3, 0.8), 0.6, (20, 20, 30))
    return to_float(pen.image)


def scene_epic(rng, pen: Pen, px: int) -> np.ndarray:
    horizon = _u(rng, 0.45, 0.65)
    pen.image.paste(Image.fromarray(to_u8(_sky(rng, px, horizon, "sunset" if rng.random() < 0.5 else "day"))))
    hy = horizon * 2 - 1
    # distant giant: a tower, a statue-like pillar or a floating rock
    far = hsv(0.6, 0.15, 0.72)
    tx = _u(rng, -0.5, 0.5)
    kind = int(rng.integers(3))
    if kind == 0:
        pen.poly([(tx - 0.14, hy + 0.2), (tx - 0.07, hy - 1.0), (tx + 0.07, hy - 1.0), (tx + 0.14, hy + 0.2)], far)
        pen.poly([(tx - 0.1, hy - 1.0), (tx, hy - 1.3), (tx + 0.1, hy - 1.0)], far)
    elif kind == 1:
        pen.poly([(tx - 0.4, hy - 0.6), (tx + 0.45, hy - 0.65), (tx + 0.2, hy - 0.35), (tx - 0.1, hy - 0.3)], far)
        pen.poly([(tx - 0.1, hy - 0.3), (tx + 0.2, hy - 0.35), (tx + 0.05, hy - 0.05)], far)
    else:
        for k in range(3):
            x = tx + (k - 1) * 0.25
            pen.rect(x - 0.05, hy - _u(rng, 0.6, 1.1), x + 0.05, hy + 0.2, far)
    # ridges layered from far (pale) to near (dark): atmospheric depth
    for layer in range(4):
        t = layer / 3
        base = hy + 0.1 + 0.35 * layer
        xs = np.linspace(-1.1, 1.1, 9 + 2 * layer)
        ys = base - rng.uniform(0.05, 0.5, len(xs)) * (1 - 0.5 * t)
        if rng.random() < 0.6:  # a mesa or spire rising from this layer
            k = int(rng.integers(1, len(xs) - 1))
            ys[k] -= _u(rng, 0.4, 0.9) * (1 - 0.4 * t)
        col = hsv(0.6, 0.2 + 0.1 * t, 0.62 - 0.5 * t)
        pen.poly(np.concatenate([np.stack([xs, ys], 1), [(1.1, 1.1), (-1.1, 1.1)]]), col)
    pen.poly([(-1.1, 1.1), (-1.1, 0.55), (-0.35, 0.62), (-0.2, 0.75), (-0.3, 1.1)], hsv(0.6, 0.2, 0.06))
    _figure(pen, -0.55, 0.56, 0.5, (8, 8, 12))
    return to_float(pen.image)


def scene_wave(rng, pen: Pen, px: int) -> np.ndarray:
    pen.image.paste(Image.fromarray(to_u8(vertical_gradient(px, [(0, hsv(0.1, 0.15, 0.9)), (1, hsv(0.1, 0.2, 0.8))]))))
    sea = hsv(0.6, 0.65, 0.4)
    fx = _u(rng, -0.2, 0.6)
    pen.poly([(fx - 0.4, 0.35), (fx - 0.05, -0.05), (fx + 0.05, -0.05), (fx + 0.4, 0.35)], hsv(0.6, 0.4, 0.5))
    pen.poly([(fx - 0.08, 0.0), (fx - 0.05, -0.05), (fx + 0.05, -0.05), (fx + 0.08, 0.0)], (250, 250, 250))
    cx, r = _u(rng, -0.7, -0.2), _u(rng, 0.6, 0.95)
    # the curling crest: a thick arc over the trough, its lip breaking into claws of foam
    t = np.linspace(np.pi * 0.95, np.pi * 2.05, 24)
    outer = np.stack([cx + r * np.cos(t), 0.35 + r * np.sin(t)], 1)
    inner = np.stack([cx + 0.55 * r * np.cos(t[::-1]) + 0.2 * r, 0.35 + 0.6 * r * np.sin(t[::-1])], 1)
    pen.poly(np.concatenate([outer, inner]), sea)
    pen.poly(np.concatenate([outer[6:], inner[:-6]]) * (1, 1) + (0.0, 0.0), shade(sea, 1.25))
    for k in range(14):
        a = np.pi * 1.2 + k * np.pi * 0.85 / 14
        x, y = cx + r * math.cos(a), 0.35 + r * math.sin(a)
        pen.circle(x, y, 0.045, (245, 245, 238))
    pen.rect(-1.1, 0.35, 1.1, 1.1, shade(sea, 1.1))
    for _ in range(12):
        x, y = _u(rng, -1, 1), _u(rng, 0.4, 1)
        pen.arc(x, y, 0.15, 0.08, np.pi, 2 * np.pi, (240, 240, 235), 0.02)
    for _ in range(int(rng.integers(0, 3))):
        x, y = _u(rng, -0.6, 0.8), _u(rng, 0.45, 0.9)
        pen.ellipse(x, y, 0.25, 0.04, hsv(0.1, 0.3, 0.8), rot=_u(rng, -0.3, 0.3))
    return to_float(pen.image)


def scene_abstract(rng, pen: Pen, px: int) -> np.ndarray:
    n = int(rng.integers(4, 8))
    edges = np.linspace(-1, 1, n + 1)
    for i in range(n):
        for j in range(n):
            pen.rect(edges[i], edges[j], edges[i + 1], edges[j + 1], hsv(_u(rng, 0, 1), _u(rng, 0.3, 0.7), _u(rng, 0.5, 0.95)))
    pen.circle(_u(rng, -0.6, 0.6), _u(rng, -0.7, -0.2), 0.18, hsv(0.05, 0.8, 0.9))
    pen.line([(_u(rng, -0.8, 0), 0.6), (_u(rng, 0, 0.8), 0.2)], (30, 30, 30), 0.03)
    pen.poly([(-0.3, 0.7), (-0.3, 0.4), (-0.1, 0.2), (0.1, 0.4), (0.1, 0.7)], hsv(0.6, 0.5, 0.4))
    return to_float(pen.image)


def scene_park(rng, pen: Pen, px: int) -> np.ndarray:
    horizon = _u(rng, 0.3, 0.45)
    pen.image.paste(Image.fromarray(to_u8(_sky(rng, px, horizon))))
    hy = horizon * 2 - 1
    pen.rect(-1.1, hy, 1.1, 1.1, hsv(0.25, 0.6, 0.55))
    if rng.random() < 0.6:
        pen.poly([(-1.1, hy), (0.2, hy), (-1.1, hy + 0.5)], hsv(0.55, 0.4, 0.7))
    for _ in range(int(rng.integers(2, 5))):
        _round_tree(pen, _u(rng, -1, 1), _u(rng, hy + 0.1, hy + 0.4), _u(rng, 1.5, 2.5), hsv(0.3, 0.6, 0.3))
    for _ in range(int(rng.integers(3, 7))):
        y = _u(rng, hy + 0.3, 0.9)
        s = 1.0 + 2.5 * (y - hy) / (1 - hy)
        _figure(pen, _u(rng, -0.9, 0.9), y, s, hsv(_u(rng, 0, 1), 0.3, _u(rng, 0.15, 0.5)))
    return to_float(pen.image)


SCENES = {
    "landscape": scene_landscape, "pond": scene_pond, "field": scene_field, "seascape": scene_seascape,
    "starry": scene_starry, "cottage": scene_cottage, "portrait": scene_portrait, "megastructure": scene_megastructure,
    "epic": scene_epic, "wave": scene_wave, "abstract": scene_abstract, "park": scene_park,
}

# What a scene shows, in words, for captions that name it.
SCENE_WORDS = {
    "landscape": "a landscape", "pond": "a pond with water lilies", "field": "a field", "seascape": "a seascape",
    "starry": "a starry night over a village", "cottage": "a cottage at dusk", "portrait": "a portrait",
    "megastructure": "a giant structure in a desert", "epic": "a vast canyon", "wave": "a great wave",
    "abstract": "an abstract composition", "park": "a park by the river",
}


def paint_scene(name: str, rng: np.random.Generator, px: int) -> np.ndarray:
    """The content image (float, (px, px, 3)) of a named art scene."""
    img = Image.new("RGB", (px, px), (128, 128, 128))
    return SCENES[name](rng, Pen(img), px)
