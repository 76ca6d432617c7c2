"""Artists' styles: a palette, a brush texture and composition habits, applicable to any image.

A style is a pipeline of vectorised image operations run on a content image (a scene or an
object photo). The brush engine (``_mosaic``) partitions the canvas into oriented strokes: each
pixel belongs to the stroke centre nearest in the stroke's own elongated metric, so strokes can
be short horizontal dabs (Monet), long swirls along a flow field (Van Gogh), flat angular facets
(Picasso) or dots (Seurat) with the same code. Stroke layouts are drawn from a ``brush`` stream
in cell units, so they do not depend on the pixel size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from .draw import Colour, blur, hexc, hsv, to_u8

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
Step = tuple[str, dict]


@dataclass(frozen=True)
class StyleSpec:
    """``scenes``: the artist's habitual subjects (weights; "object" = a random non-target object).
    ``steps``: the operations that repaint a content image, in order."""

    scenes: dict[str, float]
    steps: tuple[Step, ...]


@dataclass
class _Ctx:
    px: int
    brush: np.random.Generator
    tex: np.random.Generator
    content: np.ndarray


def _ramp(*codes: str) -> tuple[Colour, ...]:
    return tuple(hexc(c) for c in codes)


# ====================================================================== basic colour operations
def _lum(img: np.ndarray) -> np.ndarray:
    return img @ LUMA


def op_gradient_map(img, ctx, ramp, mix=1.0, stretch=True, steps=0):
    """Recolour by luminance along a dark→light ramp of palette colours (``steps``: flat bands)."""
    lum = _lum(img)
    if stretch:  # every scene spans the whole ramp, so the palette is the artist's, not the scene's
        lo, hi = np.percentile(lum[::4, ::4], (2, 98))
        lum = np.clip((lum - lo) / max(hi - lo, 1e-3), 0, 1)
    if steps:
        lum = np.round(lum * (steps - 1)) / (steps - 1)
    cols = np.asarray(ramp, np.float32) / 255.0
    pos = np.linspace(0, 1, len(cols))
    mapped = np.stack([np.interp(lum, pos, cols[:, k]) for k in range(3)], -1).astype(np.float32)
    return img * (1 - mix) + mapped * mix


def op_saturation(img, ctx, amount):
    g = _lum(img)[..., None]
    return np.clip(g + (img - g) * amount, 0, 1)


def op_levels(img, ctx, contrast=1.0, bright=0.0, gamma=1.0):
    out = np.clip((img - 0.5) * contrast + 0.5 + bright, 0, 1)
    return out ** gamma if gamma != 1.0 else out


def op_posterize(img, ctx, levels):
    return np.round(img * (levels - 1)) / (levels - 1)


def op_palette_snap(img, ctx, palette, strength=1.0):
    """Pull every pixel towards its nearest palette colour."""
    pal = np.asarray(palette, np.float32) / 255.0
    d = (pal * pal).sum(1) - 2.0 * (img @ pal.T)  # squared distance up to the pixel's own norm
    snapped = pal[d.argmin(-1)]
    return img * (1 - strength) + snapped * strength


def op_blur(img, ctx, radius):
    return blur(img, radius * ctx.px)


# ====================================================================== the brush engine
def _mosaic(px: int, centres: np.ndarray, angles: np.ndarray, length: float, width: float, reach: int,
            order: np.ndarray | None = None):
    """Assign every pixel to a stroke.

    ``centres`` (G, G, 2) in cell units (x, y), ``angles`` (G, G); a stroke is an ellipse with
    semi-axes ``length`` (along) and ``width`` (across) in cell units. With ``order`` (G, G)
    strokes are painted in that order and the last one covering a pixel wins (a painter's
    canvas); without it a pixel goes to the nearest centre in the elongated metric (flat
    Voronoi planes).

    Works on an M×M canvas with M = G·ceil(px/G) (whole pixels per cell, so a neighbouring
    cell's parameters are array slices, not gathers); callers resize their result to px.
    Returns stroke index, normalised distance to the stroke centre (1 = rim), across/along
    coordinates in the stroke, and M.
    """
    g = centres.shape[0]
    b = -(-px // g)
    m = g * b
    coord = (np.arange(m, dtype=np.float32) + 0.5) / b
    cell = np.arange(m) // b
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    cx, cy = centres[..., 0].astype(np.float32), centres[..., 1].astype(np.float32)
    # u = x·cos + y·sin − (cx·cos + cy·sin): one offset per stroke instead of per-pixel centre lookups
    off_u, off_v = cx * cos + cy * sin, cy * cos - cx * sin

    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(np.pad(a, reach, mode="edge"), b, 0), b, 1)

    cos_up, sin_up, ou_up, ov_up = up(cos), up(sin), up(off_u), up(off_v)
    rank_up = None if order is None else up(np.argsort(np.argsort(order.ravel())).reshape(g, g).astype(np.int32))
    xs, ys = coord[None, :], coord[:, None]
    offsets = [(di, dj) for di in range(-reach, reach + 1) for dj in range(-reach, reach + 1)
               if max(abs(di) - 1, 0) ** 2 + max(abs(dj) - 1, 0) ** 2 <= max(length, width) ** 2]
    # A candidate's score packs (covered, paint order or -distance, candidate number) into one int,
    # so a running maximum finds the winner without masked assignments.
    best = np.full((m, m), np.iinfo(np.int32).min, np.int32)
    inv_l, inv_w = np.float32(1.0 / length), np.float32(1.0 / width)
    for k, (di, dj) in enumerate(offsets):
        sl = (slice((reach + di) * b, (reach + di) * b + m), slice((reach + dj) * b, (reach + dj) * b + m))
        c, s = cos_up[sl], sin_up[sl]
        u = (xs * c + ys * s - ou_up[sl]) * inv_l
        v = (ys * c - xs * s - ov_up[sl]) * inv_w
        d = np.minimum(u * u + v * v, 500.0)
        score = (d * -1024.0).astype(np.int32) * 128
        if rank_up is not None:
            score += (d < 1.0) * ((1 << 28) + rank_up[sl] * 128 - score)
        score += k
        np.maximum(best, score, out=best)
    table = np.array(offsets, np.int64)
    winner = best & 127
    ii = np.clip(cell[:, None] + table[winner, 0], 0, g - 1)
    jj = np.clip(cell[None, :] + table[winner, 1], 0, g - 1)
    flat = ii * g + jj
    c, s = cos.ravel()[flat], sin.ravel()[flat]
    along = (xs * c + ys * s - off_u.ravel()[flat]) * inv_l
    across = (ys * c - xs * s - off_v.ravel()[flat]) * inv_w
    return flat, along * along + across * across, across, along, m


def _resize(img: np.ndarray, px: int) -> np.ndarray:
    if img.shape[0] == px:
        return img
    return np.asarray(Image.fromarray(to_u8(img)).resize((px, px), Image.LANCZOS), np.float32) / 255.0


def _centres(rng: np.random.Generator, cells: int, jitter: float) -> np.ndarray:
    base = np.stack(np.meshgrid(np.arange(cells), np.arange(cells)), -1).astype(np.float32) + 0.5
    return base + (rng.random((cells, cells, 2), dtype=np.float32) - 0.5) * jitter


def _smooth_field(rng: np.random.Generator, cells: int, coarse: int = 4) -> np.ndarray:
    grid = rng.random((coarse, coarse), dtype=np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((cells, cells), Image.BICUBIC))


def _stroke_angles(kind: str, rng, centres, ctx: _Ctx, angle: float, spread: float, **kw) -> np.ndarray:
    g = centres.shape[0]
    x, y = centres[..., 0] / g, centres[..., 1] / g
    noise = rng.normal(0, 1, (g, g)).astype(np.float32) * spread
    if kind == "fixed":
        return angle + noise
    if kind == "random":
        return rng.uniform(0, np.pi, (g, g)).astype(np.float32)
    if kind == "waves":
        return angle + kw.get("amp", 0.6) * np.sin(2 * np.pi * (kw.get("freq", 2.0) * y + 0.3 * x) + rng.uniform(0, 6.3)) + noise
    flow = _smooth_field(rng, g) * 2 * np.pi * kw.get("turns", 1.0)
    if kind == "flow":
        return flow + noise
    if kind in ("swirl", "contour"):
        # follow the content's contours where it has edges (along the gradient's normal)
        lum = blur(_lum(ctx.content), ctx.px * 0.02)
        gy, gx = np.gradient(lum)
        pi = np.clip((y * ctx.px).astype(int), 0, ctx.px - 1)
        pj = np.clip((x * ctx.px).astype(int), 0, ctx.px - 1)
        ex, ey = gx[pi, pj], gy[pi, pj]
        mag = np.sqrt(ex ** 2 + ey ** 2) * ctx.px
        contour = np.arctan2(ey, ex) + np.pi / 2
        base = flow
        if kind == "swirl":  # vortices: strokes circle around a few centres
            n = kw.get("vortices", 3)
            vx, vy = rng.uniform(0.1, 0.9, n), rng.uniform(0.05, 0.55, n)
            wsum = np.zeros_like(x)
            ang_x, ang_y = np.zeros_like(x), np.zeros_like(x)
            for k in range(n):
                dx, dy = x - vx[k], y - vy[k]
                w = np.exp(-(dx ** 2 + dy ** 2) / 0.03)
                t = np.arctan2(dy, dx) + np.pi / 2
                ang_x += w * np.cos(2 * t)
                ang_y += w * np.sin(2 * t)
                wsum += w
            base_x = ang_x + (1 - np.clip(wsum, 0, 1)) * np.cos(2 * flow)
            base_y = ang_y + (1 - np.clip(wsum, 0, 1)) * np.sin(2 * flow)
            base = np.arctan2(base_y, base_x) / 2
        w_edge = np.clip(mag / kw.get("edge_scale", 0.6), 0, 1)
        vx_ = w_edge * np.cos(2 * contour) + (1 - w_edge) * np.cos(2 * base)
        vy_ = w_edge * np.sin(2 * contour) + (1 - w_edge) * np.sin(2 * base)
        return np.arctan2(vy_, vx_) / 2 + noise
    raise ValueError(f"unknown stroke orientation {kind!r}")


def op_strokes(img, ctx, cells, length, width, orient="fixed", angle=0.0, spread=0.3, jitter=1.0, colour_jitter=0.05,
               value_jitter=0.05, edges=0.2, ridge=0.15, bristles=0.0, source_blur=0.01, coverage=None, ground=None,
               reach=None, **kw):
    """Repaint ``img`` with oriented elliptical strokes laid in random order, each a flat colour
    sampled from the image under its centre.

    ``coverage`` (dots): pixels outside every stroke show the ``ground`` instead of the nearest stroke.
    """
    px = ctx.px
    rng = ctx.brush
    centres = _centres(rng, cells, jitter)
    angles = _stroke_angles(orient, rng, centres, ctx, angle, spread, **kw)
    order = rng.random((cells, cells), dtype=np.float32)
    reach = int(np.ceil(max(length, width) + 0.5 * jitter - 0.5)) if reach is None else reach
    idx, dist, across, along, m = _mosaic(px, centres, angles, length, width, reach, order)
    src = blur(img, source_blur * px) if source_blur else img
    pi = np.clip((centres[..., 1] / cells * px).astype(int), 0, px - 1).ravel()
    pj = np.clip((centres[..., 0] / cells * px).astype(int), 0, px - 1).ravel()
    col = src[pi, pj]
    n = col.shape[0]
    col = col * (1 + rng.normal(0, colour_jitter, (n, 3)).astype(np.float32)) * (1 + rng.normal(0, value_jitter, (n, 1)).astype(np.float32))
    out = col[idx]
    # paint is thicker along a stroke's spine and thinner at its sides; bristles leave grooves
    shading = 1 + ridge * (0.35 - np.minimum(across * across, 1.0))
    if bristles:
        phase = rng.uniform(0, 6.3, n).astype(np.float32)[idx]
        shading = shading + bristles * np.sin(across * 5.0 + phase)
    out = out * shading[..., None]
    if edges:
        out = out * (1 - edges * np.exp(-np.abs(1.0 - dist) * 6.0))[..., None]
    if coverage is not None:
        paper = np.asarray(ground if ground is not None else (242, 236, 222), np.float32) / 255.0
        inside = np.clip((coverage - dist) * 4.0, 0, 1)[..., None]
        out = out * inside + paper * (1 - inside)
    return _resize(np.clip(out, 0, 1), px)


def op_facets(img, ctx, cells, cuts=3, edge=0.6, edge_colour=(30, 25, 20), shade_range=0.35, jitter=1.0):
    """Flat, angular planes (cubism): Voronoi cells cut by long straight lines, each shaded flat."""
    px, rng = ctx.px, ctx.brush
    centres = _centres(rng, cells, jitter)
    idx, _, _, _, m = _mosaic(px, centres, np.zeros((cells, cells), np.float32), 1.0, 1.0, 1)
    img = _resize(img, m)
    coord = (np.arange(m, dtype=np.float32) + 0.5) / m
    yy, xx = coord[:, None], coord[None, :]
    side = np.zeros((m, m), np.int64)
    line_dist = np.full((m, m), np.inf, np.float32)
    for k in range(cuts):
        a = rng.uniform(0, np.pi)
        ox, oy = rng.uniform(0.2, 0.8, 2)
        signed = (xx - ox) * np.sin(a) - (yy - oy) * np.cos(a)
        side = side * 2 + (signed > 0)
        line_dist = np.minimum(line_dist, np.abs(signed) * m)
    n_facets = cells * cells * 2 ** cuts
    facet = (idx * (2 ** cuts) + side).ravel()
    counts = np.maximum(np.bincount(facet, minlength=n_facets), 1).astype(np.float32)
    mean = np.stack([np.bincount(facet, img[..., k].ravel(), n_facets) for k in range(3)], 1) / counts[:, None]
    facet = facet.reshape(m, m)
    # each plane gets a light gradient in its own direction, as if lit from a different side
    ga = rng.uniform(0, 2 * np.pi, n_facets).astype(np.float32)
    grad = (np.cos(ga)[facet] * (xx - 0.5) + np.sin(ga)[facet] * (yy - 0.5)) * 2 * shade_range
    out = mean[facet] * (1 + grad)[..., None]
    boundary = _boundaries(facet, m) + np.exp(-line_dist / (m * 0.006))
    e = np.clip(boundary, 0, 1)[..., None] * edge
    ec = np.asarray(edge_colour, np.float32) / 255.0
    return _resize(np.clip(out * (1 - e) + ec * e, 0, 1), px)


def _boundaries(labels: np.ndarray, px: int) -> np.ndarray:
    """1 on pixels next to a different label, softened to about a line width."""
    b = np.zeros(labels.shape, np.float32)
    b[1:] += labels[1:] != labels[:-1]
    b[:, 1:] += labels[:, 1:] != labels[:, :-1]
    return np.clip(blur(np.clip(b, 0, 1), px * 0.004) * 2.5, 0, 1)


def op_blocks(img, ctx, cells, palette, tint=0.45, line=0.25):
    """A loose grid of coloured rectangles over the image (Klee's magic squares)."""
    px, rng = ctx.px, ctx.brush
    xs = np.sort(np.concatenate([[0, 1], rng.uniform(0.05, 0.95, cells - 1)]))
    ys = np.sort(np.concatenate([[0, 1], rng.uniform(0.05, 0.95, cells - 1)]))
    coord = (np.arange(px, dtype=np.float32) + 0.5) / px
    ci = np.searchsorted(ys, coord) - 1
    cj = np.searchsorted(xs, coord) - 1
    pal = np.asarray(palette, np.float32) / 255.0
    choice = pal[rng.integers(len(pal), size=(cells, cells))]
    tints = choice[ci][:, cj]
    out = img * (1 - tint) + tints * tint * (0.6 + 0.8 * _lum(img)[..., None])
    gy = np.min(np.abs(coord[:, None] - ys[None, :]), 1) * px
    gx = np.min(np.abs(coord[:, None] - xs[None, :]), 1) * px
    lines = np.exp(-np.minimum(gy[:, None], gx[None, :]) / (px * 0.004))
    return np.clip(out * (1 - line * lines)[..., None], 0, 1)


# ====================================================================== lines, light, surface
def _edges(ctx: _Ctx, scale: float, source: np.ndarray | None = None, detail: float = 0.006) -> np.ndarray:
    lum = blur(_lum(ctx.content if source is None else source), ctx.px * detail)
    gy, gx = np.gradient(lum)
    return np.sqrt(gx ** 2 + gy ** 2) * ctx.px / scale


def op_outline(img, ctx, colour, strength=0.8, threshold=0.25, width=0.0, source="content", detail=0.006):
    """Ink lines along the content's edges.

    Edge strength is contrast per image width (a step of 0.5 over 2 % of the image is 25), so a
    low ``threshold`` inks every visible edge and a high one only the big contrasty shapes;
    ``detail`` blurs away features smaller than about that fraction of the image first.
    """
    e = _edges(ctx, 1.0, None if source == "content" else img, detail)
    e = np.clip(e - threshold, 0, threshold * 2) / (threshold * 2)
    if width:
        e = np.clip(blur(e, width * ctx.px) * 2.2, 0, 1)
    c = np.asarray(colour, np.float32) / 255.0
    a = (e * strength)[..., None]
    return img * (1 - a) + c * a


def op_bloom(img, ctx, threshold=0.7, radius=0.05, strength=0.6, tint=(255, 220, 150)):
    """Light bleeding out of the bright parts."""
    bright = np.clip((_lum(img) - threshold) / (1 - threshold), 0, 1)
    halo = blur(bright, radius * ctx.px)
    t = np.asarray(tint, np.float32) / 255.0
    return np.clip(img + strength * halo[..., None] * t, 0, 1)


def op_sparkles(img, ctx, count, colours, size=0.012, glow=2.5, where=None):
    """Scattered glowing points (fireflies, magic particles, window lights)."""
    px, rng = ctx.px, ctx.brush
    pts = rng.random((count, 2))
    cols = np.asarray(colours, np.float32)[rng.integers(len(colours), size=count)] / 255.0
    sizes = rng.uniform(0.5, 1.5, count) * size
    if where == "bright":
        lum = _lum(blur(ctx.content, px * 0.01))
        keep = lum[(pts[:, 1] * (px - 1)).astype(int), (pts[:, 0] * (px - 1)).astype(int)] > 0.55
        pts, cols, sizes = pts[keep], cols[keep], sizes[keep]
    layer = np.zeros((px, px, 3), np.float32)
    for (x, y), c, s in zip(pts, cols, sizes):
        i, j = int(y * px), int(x * px)
        r = max(1, int(s * px * glow))
        i0, i1, j0, j1 = max(0, i - r), min(px, i + r + 1), max(0, j - r), min(px, j + r + 1)
        if i0 >= i1 or j0 >= j1:
            continue
        yy, xx = np.mgrid[i0:i1, j0:j1]
        d2 = ((yy - i) ** 2 + (xx - j) ** 2) / max((s * px) ** 2, 0.5)
        layer[i0:i1, j0:j1] += np.exp(-d2)[..., None] * c
    return np.clip(img + layer, 0, 1)


def op_fog(img, ctx, colour, amount=0.5, height=0.6, spread=0.2, haze=0.15):
    """Atmospheric depth: a band of fog at the horizon and a general haze."""
    y = (np.arange(ctx.px, dtype=np.float32) + 0.5) / ctx.px
    h = height + float(ctx.brush.uniform(-0.1, 0.1))
    f = np.clip(haze + amount * np.exp(-((y - h) / spread) ** 2), 0, 1)[:, None, None]
    c = np.asarray(colour, np.float32) / 255.0
    return img * (1 - f) + c * f


def op_grain(img, ctx, amount=0.05, cells=48, fine=0.02):
    """Paper or canvas texture: low-frequency mottling plus fine noise."""
    g = ctx.brush.random((cells, cells), dtype=np.float32)
    mottle = np.asarray(Image.fromarray(g, "F").resize((ctx.px, ctx.px), Image.BICUBIC)) - 0.5
    noise = ctx.tex.normal(0, fine, (ctx.px, ctx.px)).astype(np.float32) if fine else 0.0
    return np.clip(img * (1 + amount * mottle + noise)[..., None], 0, 1)


def op_vignette(img, ctx, strength=0.5, colour=(0, 0, 0), power=2.0):
    c = (np.arange(ctx.px, dtype=np.float32) + 0.5) / ctx.px - 0.5
    r = np.sqrt(c[:, None] ** 2 + c[None, :] ** 2) / 0.7071
    v = np.clip(strength * r ** power, 0, 1)[..., None]
    return img * (1 - v) + np.asarray(colour, np.float32) / 255.0 * v


def op_scanlines(img, ctx, lines=24, strength=0.12):
    y = (np.arange(ctx.px, dtype=np.float32) + 0.5) / ctx.px
    s = 1 - strength * (0.5 + 0.5 * np.cos(2 * np.pi * lines * y))
    return img * s[:, None, None]


def op_halftone(img, ctx, cells=22, strength=0.5, angle=0.4):
    """Printed dots: darker areas get bigger dots."""
    c = (np.arange(ctx.px, dtype=np.float32) + 0.5) / ctx.px * cells
    yy, xx = c[:, None], c[None, :]
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    d = np.sqrt((u - np.floor(u) - 0.5) ** 2 + (v - np.floor(v) - 0.5) ** 2)
    radius = 0.65 * np.sqrt(1 - _lum(img))
    dots = np.clip((radius - d) * 8, 0, 1)[..., None]
    return np.clip(img * (1 - strength * dots), 0, 1)


def op_watercolor(img, ctx, pool=0.35, bleed=0.012, wash=0.15):
    """Pigment pooling along the big shapes' edges, soft bleeding and a pale wash."""
    px = ctx.px
    soft = blur(img, bleed * px)
    e = np.clip(_edges(ctx, 1.0, soft, detail=0.012) - 4.0, 0, 12.0) / 12.0
    out = soft * (1 - pool * e)[..., None]
    return np.clip(out * (1 - wash) + wash, 0, 1)


def op_frame(img, ctx, colour, inset=0.05, width=0.012, arch=True):
    """An ornamental frame line (art-nouveau panels)."""
    px = ctx.px
    c = (np.arange(px, dtype=np.float32) + 0.5) / px
    yy, xx = c[:, None], c[None, :]
    box = np.minimum(np.minimum(xx - inset, 1 - inset - xx), np.minimum(yy - inset, 1 - inset - yy))
    d = np.abs(box)
    if arch:
        r = 0.5 - inset
        ring = np.abs(np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2) - r * 0.92)
        d = np.minimum(d, ring + (yy > 0.55) * 1.0)
    a = np.clip(1 - d / width, 0, 1)[..., None]
    return img * (1 - a) + np.asarray(colour, np.float32) / 255.0 * a


def op_pop_grid(img, ctx, schemes, grid_prob=0.6):
    """Warhol: flat posterized colour schemes, often repeated in a 2×2 grid."""
    px = ctx.px
    rng = ctx.brush
    order = rng.permutation(len(schemes))
    lum = _lum(blur(img, px * 0.006))
    lo, hi = np.percentile(lum, (5, 95))
    level = np.clip(((lum - lo) / max(hi - lo, 1e-3) * 3).astype(int), 0, 2)

    def colour(scheme_idx, lv):
        pal = np.asarray(schemes[scheme_idx], np.float32) / 255.0
        return pal[lv]

    if rng.random() >= grid_prob:
        return colour(order[0], level)
    half = px // 2
    small = level[::2, ::2][:half, :half]
    out = np.empty((px, px, 3), np.float32)
    for q, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[i * half:(i + 1) * half, j * half:(j + 1) * half] = colour(order[q % len(order)], small)
    return out


OPS: dict[str, Callable] = {
    "gradient_map": op_gradient_map, "saturation": op_saturation, "levels": op_levels, "posterize": op_posterize,
    "palette_snap": op_palette_snap, "blur": op_blur, "strokes": op_strokes, "facets": op_facets, "blocks": op_blocks,
    "outline": op_outline, "bloom": op_bloom, "sparkles": op_sparkles, "fog": op_fog, "grain": op_grain,
    "vignette": op_vignette, "scanlines": op_scanlines, "halftone": op_halftone, "watercolor": op_watercolor,
    "frame": op_frame, "pop_grid": op_pop_grid,
}


# ====================================================================== the artists
STYLE_SPECS: dict[str, StyleSpec] = {
    # Impressionism: broken colour in short horizontal dabs, pastel light, no lines.
    "claude-monet": StyleSpec(
        {"pond": 0.3, "field": 0.2, "seascape": 0.15, "landscape": 0.1, "object": 0.25},
        (("blur", dict(radius=0.012)),
         ("gradient_map", dict(ramp=_ramp("34427e", "7d6fb8", "6fa6cf", "a6cf98", "f0b5c4", "fbf0d6"), mix=0.5)),
         ("levels", dict(contrast=0.95, bright=0.05)),
         ("strokes", dict(cells=34, length=1.2, width=0.4, orient="fixed", angle=0.0, spread=0.3, colour_jitter=0.05,
                          value_jitter=0.05, edges=0.08, ridge=0.15, source_blur=0.008)),
         ("blur", dict(radius=0.003)))),
    # Swirling impasto: long strokes along vortices and contours, cobalt and chrome yellow, dark gaps.
    "van-gogh": StyleSpec(
        {"starry": 0.35, "field": 0.25, "landscape": 0.1, "object": 0.3},
        (("gradient_map", dict(ramp=_ramp("0a1a45", "1d4796", "3b78c2", "4f8f6a", "d9a430", "f6d443", "fcf3b0"), mix=0.7)),
         ("saturation", dict(amount=1.3)),
         ("strokes", dict(cells=24, length=2.2, width=0.42, orient="swirl", spread=0.12, colour_jitter=0.06, value_jitter=0.1,
                          edges=0.4, ridge=0.3, bristles=0.08, source_blur=0.008, vortices=3)),
         ("outline", dict(colour=(15, 25, 70), strength=0.6, threshold=0.35, width=0.004)))),
    # Cubism: the subject broken into angular flat planes, earth palette, heavy black contours.
    "pablo-picasso": StyleSpec(
        {"portrait": 0.45, "object": 0.45, "abstract": 0.1},
        (("blur", dict(radius=0.01)),
         ("levels", dict(contrast=1.1, bright=0.12, gamma=0.85)),
         ("palette_snap", dict(palette=_ramp("e0bd7a", "b07a45", "a3a39c", "6f8fab", "f2e6c9", "c96f4f", "7d8a5a"), strength=0.7)),
         ("facets", dict(cells=7, cuts=3, edge=0.5, edge_colour=(45, 35, 30), shade_range=0.35)),
         ("outline", dict(colour=(35, 28, 24), strength=0.75, threshold=0.3, detail=0.01)),
         ("grain", dict(amount=0.12, cells=40, fine=0.02)))),
    # Glowing idyll: warm light pouring from windows, bloom, sparkles, soft dabs, dark blue vignette.
    "thomas-kinkade": StyleSpec(
        {"cottage": 0.55, "landscape": 0.15, "object": 0.3},
        (("gradient_map", dict(ramp=_ramp("14283a", "2b5247", "7a6a7c", "d98f7a", "f5c46a", "fff3cf"), mix=0.55)),
         ("saturation", dict(amount=1.2)),
         ("strokes", dict(cells=40, length=0.9, width=0.6, orient="random", colour_jitter=0.04, value_jitter=0.05, edges=0.04,
                          ridge=0.08, source_blur=0.006)),
         ("bloom", dict(threshold=0.55, radius=0.06, strength=0.9, tint=(255, 210, 130))),
         ("sparkles", dict(count=40, colours=_ramp("fff2b0", "ffd27a"), size=0.008, where="bright")),
         ("vignette", dict(strength=0.75, colour=(10, 20, 45), power=2.2)))),
    # Retro-futurist: clean flat bands of teal, violet and salmon, banded gradients, scanlines.
    "kilian-eng": StyleSpec(
        {"megastructure": 0.6, "object": 0.3, "landscape": 0.1},
        (("blur", dict(radius=0.004)),
         ("gradient_map", dict(ramp=_ramp("150f3a", "472769", "1c7f86", "5ccfc4", "f08a6c", "fbd5a6"), mix=1.0, steps=7)),
         ("outline", dict(colour=(250, 230, 200), strength=0.55, threshold=0.3, source="content")),
         ("scanlines", dict(lines=40, strength=0.1)),
         ("grain", dict(amount=0.0, fine=0.025)))),
    # Epic concept art: towering forms in fog, cold desaturated blues, a warm accent, rough brush.
    "tyler-edlin": StyleSpec(
        {"epic": 0.6, "object": 0.3, "landscape": 0.1},
        (("gradient_map", dict(ramp=_ramp("080c12", "18242f", "2f4352", "5a7080", "9fb0ba", "dfe4e2"), mix=0.85)),
         ("fog", dict(colour=(150, 168, 182), amount=0.5, height=0.6, spread=0.14, haze=0.06)),
         ("bloom", dict(threshold=0.7, radius=0.08, strength=0.7, tint=(255, 160, 80))),
         ("strokes", dict(cells=28, length=0.9, width=0.45, orient="fixed", angle=1.5708, spread=0.2, colour_jitter=0.015,
                          value_jitter=0.05, edges=0.0, ridge=0.05, source_blur=0.0)),
         ("levels", dict(contrast=1.25, bright=-0.04)),
         ("grain", dict(amount=0.12, cells=64, fine=0.04)),
         ("vignette", dict(strength=0.7, colour=(4, 6, 10))))),
    # Art-nouveau watercolour: pale teal and peach washes, pooled edges, fine gold line work, frames.
    "kelly-mckernan": StyleSpec(
        {"portrait": 0.5, "object": 0.35, "pond": 0.15},
        (("gradient_map", dict(ramp=_ramp("1d4a58", "3a8c8c", "7cc8c0", "d9b56a", "f0c4a2", "f8eedb"), mix=0.6)),
         ("watercolor", dict(pool=0.3, bleed=0.014, wash=0.18)),
         ("grain", dict(amount=0.14, cells=36, fine=0.015)),
         ("outline", dict(colour=(176, 132, 52), strength=0.85, threshold=3.0, detail=0.01)),
         ("frame", dict(colour=(176, 132, 52), inset=0.05, width=0.012, arch=True)))),
    # Vivid fantasy illustration: saturated violet/magenta/cyan, smooth paint, rim glow, particles.
    "kirbi-fagan": StyleSpec(
        {"portrait": 0.5, "object": 0.35, "starry": 0.15},
        (("blur", dict(radius=0.01)),
         ("gradient_map", dict(ramp=_ramp("1a0a30", "481d78", "c2338f", "f2784b", "4fd4e0", "fde3f2"), mix=0.75)),
         ("saturation", dict(amount=1.35)),
         ("strokes", dict(cells=30, length=1.6, width=0.55, orient="contour", spread=0.1, colour_jitter=0.02, value_jitter=0.03,
                          edges=0.0, ridge=0.06, source_blur=0.0)),
         ("bloom", dict(threshold=0.6, radius=0.04, strength=0.8, tint=(120, 230, 255))),
         ("sparkles", dict(count=35, colours=_ramp("aef6ff", "ffb3f0", "fff1a8"), size=0.006)),
         ("vignette", dict(strength=0.55, colour=(40, 5, 60))))),
    # --- non-target artists for preserve sets
    "hokusai": StyleSpec(
        {"wave": 0.45, "landscape": 0.2, "object": 0.35},
        (("blur", dict(radius=0.006)),
         ("gradient_map", dict(ramp=_ramp("22335a", "3d6a9a", "9fb8c8", "e3d6b4", "f4ead2"), mix=1.0, steps=5)),
         ("outline", dict(colour=(25, 25, 30), strength=0.9, threshold=0.25, detail=0.01)),
         ("grain", dict(amount=0.1, cells=56, fine=0.02)))),
    "edvard-munch": StyleSpec(
        {"seascape": 0.35, "portrait": 0.25, "landscape": 0.15, "object": 0.25},
        (("gradient_map", dict(ramp=_ramp("1b2a3a", "2f5a7a", "b8462e", "e0803a", "f2c45a"), mix=0.75)),
         ("strokes", dict(cells=20, length=2.6, width=0.45, orient="waves", angle=0.0, amp=0.7, freq=2.5, spread=0.05,
                          colour_jitter=0.05, value_jitter=0.06, edges=0.3, ridge=0.2, source_blur=0.02)),
         ("outline", dict(colour=(20, 20, 30), strength=0.5, threshold=0.35, width=0.006)))),
    "andy-warhol": StyleSpec(
        {"portrait": 0.4, "object": 0.6},
        (("pop_grid", dict(schemes=[_ramp("e6007e", "ffde00", "00a6e0"), _ramp("1e1e1e", "ff5f1f", "8fe3ff"),
                                    _ramp("2b0a57", "39ff14", "ff9ee5"), _ramp("c8102e", "00b2a9", "ffe600")])),
         ("halftone", dict(cells=26, strength=0.35)),
         ("outline", dict(colour=(15, 15, 15), strength=0.9, threshold=0.3, source="content")))),
    "paul-klee": StyleSpec(
        {"abstract": 0.35, "landscape": 0.25, "object": 0.4},
        (("blur", dict(radius=0.01)),
         ("gradient_map", dict(ramp=_ramp("3d2b1f", "8a4f2a", "d08a3c", "e9c46a", "f4e3c1"), mix=0.5)),
         ("blocks", dict(cells=7, palette=_ramp("d1495b", "edae49", "66a182", "00798c", "e07a5f", "8e6c8a"), tint=0.45)),
         ("outline", dict(colour=(40, 30, 25), strength=0.7, threshold=0.3)),
         ("grain", dict(amount=0.12, cells=60, fine=0.02)))),
    "georges-seurat": StyleSpec(
        {"park": 0.5, "seascape": 0.2, "object": 0.3},
        (("saturation", dict(amount=1.3)),
         ("strokes", dict(cells=36, length=0.48, width=0.48, orient="random", colour_jitter=0.16, value_jitter=0.05, edges=0.0,
                          ridge=0.0, source_blur=0.012, coverage=1.0, ground=(240, 233, 214), reach=1)),)),
}


def anonymous_style(rng: np.random.Generator, scenes: tuple[str, ...]) -> StyleSpec:
    """One unnamed painter's style, drawn at random: a palette ramp, a brush and finishing touches.

    Most art in SD's training data is by nobody famous, so "an artwork" there is broad, not one of
    the benchmark's artists; these artworks give the embedded world that generic prior. The ops and
    their ranges are the named artists', recombined; the brushes avoid the named artists' signature
    settings (Van Gogh's swirl, Seurat's dots, Warhol's grid) so no anonymous work is one of theirs.
    """
    hue, drift = rng.uniform(0, 1), rng.uniform(-0.35, 0.35)
    sat = rng.uniform(0.2, 0.75)
    ramp = tuple(hsv(hue + drift * t, sat * (0.6 + 0.6 * t * (1 - t)), 0.12 + 0.83 * t) for t in np.linspace(0, 1, 5))
    steps: list[Step] = [("blur", dict(radius=float(rng.uniform(0.002, 0.012)))),
                         ("gradient_map", dict(ramp=ramp, mix=float(rng.uniform(0.3, 0.8)),
                                               steps=int(rng.choice([0, 0, 0, 5, 7])))),
                         ("saturation", dict(amount=float(rng.uniform(0.8, 1.25))))]
    brush = str(rng.choice(["strokes", "strokes", "facets", "watercolor", "none"]))
    if brush == "strokes":
        steps.append(("strokes", dict(cells=int(rng.integers(20, 42)), length=float(rng.uniform(0.6, 1.8)),
                                      width=float(rng.uniform(0.35, 0.6)), orient=str(rng.choice(["fixed", "random", "contour"])),
                                      angle=float(rng.uniform(0, np.pi)), spread=float(rng.uniform(0.1, 0.4)),
                                      colour_jitter=float(rng.uniform(0.02, 0.08)), value_jitter=0.05,
                                      edges=float(rng.uniform(0, 0.3)), ridge=float(rng.uniform(0.05, 0.25)))))
    elif brush == "facets":
        steps.append(("facets", dict(cells=int(rng.integers(6, 11)), cuts=int(rng.integers(1, 4)),
                                     edge=float(rng.uniform(0.2, 0.6)), shade_range=float(rng.uniform(0.15, 0.4)))))
    elif brush == "watercolor":
        steps.append(("watercolor", dict(pool=float(rng.uniform(0.15, 0.4)), bleed=0.012, wash=float(rng.uniform(0.08, 0.2)))))
    if rng.random() < 0.35:
        steps.append(("outline", dict(colour=ramp[0], strength=float(rng.uniform(0.4, 0.8)), threshold=0.3)))
    if rng.random() < 0.5:
        steps.append(("grain", dict(amount=float(rng.uniform(0.03, 0.12)), cells=int(rng.integers(36, 64)), fine=0.02)))
    if rng.random() < 0.3:
        steps.append(("vignette", dict(strength=float(rng.uniform(0.3, 0.7)), colour=ramp[0])))
    weights = rng.dirichlet(np.ones(len(scenes)))
    return StyleSpec(dict(zip(scenes, map(float, weights))), tuple(steps))


def apply_style(content: np.ndarray, style: str | StyleSpec, brush: np.random.Generator,
                tex: np.random.Generator) -> np.ndarray:
    """Repaint a content image (float (px, px, 3) in [0, 1]) in ``style`` (an artist id or a spec)."""
    ctx = _Ctx(content.shape[0], brush, tex, content)
    img = content
    spec = STYLE_SPECS[style] if isinstance(style, str) else style
    for name, kwargs in spec.steps:
        img = OPS[name](img, ctx, **kwargs)
    return np.clip(img, 0, 1).astype(np.float32)
