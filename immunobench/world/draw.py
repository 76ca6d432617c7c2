"""Drawing primitives: a posed pen over PIL, colour helpers, value noise, layer compositing.

Shapes are described in an object frame (x right, y down, the object inside [-1, 1]²) and a
``Pen`` maps that frame onto pixels with a pose (centre, scale, rotation, mirror). Ellipses and
arcs become polygons so that every shape rotates correctly.
"""
from __future__ import annotations

import colorsys
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Colour = tuple[int, int, int]

_UNIT_CIRCLE = {n: np.stack([np.cos(np.linspace(0, 2 * np.pi, n, endpoint=False)),
                             np.sin(np.linspace(0, 2 * np.pi, n, endpoint=False))], 1) for n in (12, 20, 32, 48)}


# ---------------------------------------------------------------- colours
def hsv(h: float, s: float, v: float) -> Colour:
    """HSV in [0,1] (hue wraps) → 8-bit RGB."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5))


def hexc(code: str) -> Colour:
    code = code.lstrip("#")
    return (int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16))


def shade(c: Colour, f: float) -> Colour:
    """Multiply brightness (f < 1 darker); f > 1 moves towards white."""
    if f <= 1:
        return tuple(int(max(0, v * f)) for v in c)  # type: ignore[return-value]
    t = min(f - 1, 1.0)
    return tuple(int(v + (255 - v) * t) for v in c)  # type: ignore[return-value]


def mix(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def jitter(c: Colour, rng: np.random.Generator, amount: float = 0.08) -> Colour:
    """A nearby colour: small hue/saturation/value noise."""
    h, s, v = colorsys.rgb_to_hsv(*(x / 255 for x in c))
    return hsv(h + rng.normal(0, amount * 0.3), s * (1 + rng.normal(0, amount)), v * (1 + rng.normal(0, amount)))


# ---------------------------------------------------------------- pen
class Pen:
    """Draws object-frame shapes on a PIL image with a pose.

    ``cx, cy`` are the object's centre as fractions of the image, ``scale`` its half-extent as a
    fraction of half the image, ``angle`` a rotation in radians, ``flip`` a horizontal mirror.
    """

    def __init__(self, image: Image.Image, cx: float = 0.5, cy: float = 0.5, scale: float = 1.0,
                 angle: float = 0.0, flip: bool = False):
        self.image = image
        self.draw = ImageDraw.Draw(image)
        w, h = image.size
        self.unit = scale * w / 2  # pixels per object unit
        c, s = math.cos(angle), math.sin(angle)
        fx = -1.0 if flip else 1.0
        self._m = np.array([[c * fx, -s], [s * fx, c]]) * self.unit
        self._t = np.array([cx * w, cy * h])

    def px(self, pts: np.ndarray) -> list[tuple[float, float]]:
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2) @ self._m.T + self._t
        return list(map(tuple, p))

    def w(self, width: float) -> int:
        return max(1, int(round(width * self.unit)))

    def poly(self, pts, fill, outline=None, width: float = 0.0) -> None:
        p = self.px(pts)
        self.draw.polygon(p, fill=fill)
        if outline is not None and width > 0:
            self.draw.line(p + [p[0]], fill=outline, width=self.w(width), joint="curve")

    def rect(self, x0, y0, x1, y1, fill, outline=None, width: float = 0.0) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], fill, outline, width)

    def rrect(self, x0, y0, x1, y1, r, fill, outline=None, width: float = 0.0) -> None:
        self.poly(rounded_rect(x0, y0, x1, y1, r), fill, outline, width)

    def ellipse(self, cx, cy, rx, ry, fill, rot: float = 0.0, outline=None, width: float = 0.0, n: int = 32) -> None:
        self.poly(ellipse_pts(cx, cy, rx, ry, rot, n), fill, outline, width)

    def circle(self, cx, cy, r, fill, outline=None, width: float = 0.0) -> None:
        n = 20 if r * self.unit < 6 else 32 if r * self.unit < 20 else 48
        self.poly(ellipse_pts(cx, cy, r, r, 0.0, n), fill, outline, width)

    def line(self, pts, fill, width: float) -> None:
        p = self.px(pts)
        wpx = self.w(width)
        self.draw.line(p, fill=fill, width=wpx, joint="curve")
        if wpx >= 3:  # round caps, which PIL does not draw
            r = wpx / 2
            for q in (p[0], p[-1]):
                self.draw.ellipse([q[0] - r, q[1] - r, q[0] + r, q[1] + r], fill=fill)

    def arc(self, cx, cy, rx, ry, a0, a1, fill, width: float, n: int = 24) -> None:
        t = np.linspace(a0, a1, n)
        self.line(np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1), fill, width)

    def wedge(self, cx, cy, rx, ry, a0, a1, fill, n: int = 16) -> None:
        t = np.linspace(a0, a1, n)
        pts = np.concatenate([[[cx, cy]], np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)])
        self.poly(pts, fill)


def ellipse_pts(cx, cy, rx, ry, rot: float = 0.0, n: int = 32) -> np.ndarray:
    u = _UNIT_CIRCLE.get(n)
    if u is None:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        u = np.stack([np.cos(t), np.sin(t)], 1)
    p = u * (rx, ry)
    if rot:
        c, s = math.cos(rot), math.sin(rot)
        p = p @ np.array([[c, s], [-s, c]])
    return p + (cx, cy)


def rounded_rect(x0, y0, x1, y1, r, n: int = 5) -> np.ndarray:
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    pts = []
    for (cx, cy, a) in ((x1 - r, y0 + r, -np.pi / 2), (x1 - r, y1 - r, 0.0),
                        (x0 + r, y1 - r, np.pi / 2), (x0 + r, y0 + r, np.pi)):
        t = np.linspace(a, a + np.pi / 2, n)
        pts.append(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1))
    return np.concatenate(pts)


def bezier(p0, p1, p2, n: int = 16, p3=None) -> np.ndarray:
    """Quadratic (or cubic with ``p3``) Bézier points."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    if p3 is None:
        return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    p3 = np.asarray(p3, float)
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


# ---------------------------------------------------------------- rasters
def new_layer(px: int) -> Image.Image:
    return Image.new("RGBA", (px, px), (0, 0, 0, 0))


def value_noise(rng: np.random.Generator, px: int, cells: int, octaves: int = 1) -> np.ndarray:
    """Smooth noise in [0, 1] of shape (px, px): a random ``cells``² grid, bicubic-upsampled.

    The number of random draws depends on ``cells`` only, so the pattern is the same at any size.
    """
    out = np.zeros((px, px), np.float32)
    total = 0.0
    for o in range(octaves):
        n = cells * 2 ** o + 1
        grid = rng.random((n, n), dtype=np.float32)
        up = np.asarray(Image.fromarray(grid, "F").resize((px, px), Image.BICUBIC))
        amp = 0.5 ** o
        out += amp * up
        total += amp
    return np.clip(out / total, 0, 1)


def blur(arr: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur (standard deviation ``radius`` px) of a float image (H, W) or (H, W, 3) in [0, 1]."""
    if radius <= 0.3:
        return arr
    if arr.ndim == 3:  # PIL's blur is fastest, and 8 bits are plenty for colour images
        img = Image.fromarray(to_u8(arr))
        return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0
    # three box filters ≈ a Gaussian, in float (PIL cannot blur float images)
    half = max(1, int(round((math.sqrt(4 * radius * radius + 1) - 1) / 2)))
    out = arr.astype(np.float32)
    for _ in range(3):
        out = _box(_box(out, half, 0), half, 1)
    return out


def _box(a: np.ndarray, half: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[axis] = (half + 1, half)
    c = np.moveaxis(np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float32), axis, 0)
    n = a.shape[axis]
    return np.moveaxis((c[2 * half + 1:2 * half + 1 + n] - c[:n]) / (2 * half + 1), 0, axis)


def blur_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Fast Gaussian blur of a (H, W) mask in [0, 1] at 8-bit precision (for alpha and shadows)."""
    if radius <= 0.3:
        return mask
    img = Image.fromarray(to_u8(mask), "L").filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(img, np.float32) / 255.0


def to_u8(arr: np.ndarray) -> np.ndarray:
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


def to_float(img: Image.Image | np.ndarray) -> np.ndarray:
    return np.asarray(img, np.float32) / 255.0


def vertical_gradient(px: int, stops: Sequence[tuple[float, Colour]]) -> np.ndarray:
    """(px, px, 3) float image whose rows interpolate colour ``stops`` [(y in 0..1, colour)]."""
    ys = np.linspace(0, 1, px)
    pos = np.array([s[0] for s in stops])
    cols = np.array([s[1] for s in stops], np.float32) / 255.0
    rows = np.stack([np.interp(ys, pos, cols[:, k]) for k in range(3)], 1).astype(np.float32)
    return np.broadcast_to(rows[:, None, :], (px, px, 3)).copy()
