"""Hand-made image features and a nearest-centroid classifier: a judge that needs no training run.

Used to check that the world's concepts are distinguishable at all (colour histograms, a coarse
colour layout, and histograms of gradient orientations), independent of any learned network.
"""
from __future__ import annotations

import numpy as np

_ORIENTATION_BINS = 8
_GRID = 2


def handcrafted_features(images: np.ndarray) -> np.ndarray:
    """Features (N, F) of uint8 images (N, H, W, 3): colour histogram + colour layout + oriented gradients."""
    x = np.asarray(images, np.float32) / 255.0
    if x.ndim == 3:
        x = x[None]
    n, h, w, _ = x.shape
    q = np.minimum((x * 4).astype(np.int64), 3)
    codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    colour_hist = np.stack([np.bincount(c.ravel(), minlength=64) for c in codes]).astype(np.float32) / (h * w)
    hc, wc = h - h % 4, w - w % 4
    layout = x[:, :hc, :wc].reshape(n, 4, hc // 4, 4, wc // 4, 3).mean((2, 4)).reshape(n, -1)
    lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
    gy, gx = np.gradient(lum, axis=(1, 2))
    mag = np.sqrt(gx ** 2 + gy ** 2)
    ori = np.minimum(((np.arctan2(gy, gx) % np.pi) / np.pi * _ORIENTATION_BINS).astype(np.int64), _ORIENTATION_BINS - 1)
    hog = []
    for i in range(_GRID):
        for j in range(_GRID):
            sl = (slice(None), slice(i * h // _GRID, (i + 1) * h // _GRID), slice(j * w // _GRID, (j + 1) * w // _GRID))
            o, m = ori[sl].reshape(n, -1), mag[sl].reshape(n, -1)
            cell = np.stack([np.bincount(o[k], m[k], _ORIENTATION_BINS) for k in range(n)])
            hog.append(cell / (cell.sum(1, keepdims=True) + 1e-6))
    energy = np.stack([mag.mean((1, 2)), (mag > 0.1).mean((1, 2)), lum.std((1, 2))], 1)
    return np.concatenate([colour_hist, layout, *hog, energy], 1)


class NearestCentroid:
    """Standardise features, then predict the class whose mean is nearest."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> "NearestCentroid":
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-6
        z = (x - self.mean_) / self.scale_
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([z[y == c].mean(0) for c in self.classes_])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean_) / self.scale_
        d = ((z[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        return self.classes_[d.argmin(1)]

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == y).mean())
