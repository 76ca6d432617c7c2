"""The leaderboard's scores, exactly as DESIGN.md ("Metrics") and MIMA §5 define them.

M(a, b): a similarity backend's mean over all pairs (cosine for C/D, 1 − LPIPS for L).
x^r: references, x^A: generations after the attack *without* the defense, x^T: *with* it.

- MSGR = (1/|C|) Σ_n [M(x^r_n, x^A_n) − M(x^r_n, x^T_n)] / M(x^r_n, x^A_n) · 100 (MIMA Eq. 11).
- MRSGR = (M̄_other − M̄_target) / M̄_other · 100 with M̄_S the mean over S of the *paired*
  similarity M(x^T_n, x^A_n) — image i of one set against image i of the other, same prompt
  and seed (MIMA Eq. 12–14).
- nearest training distance (memorization): per generation, the distance to its nearest
  attack-training image, averaged over generations — near 0 = a copy of a training image.
- accuracy: top-1 of the classifier judge on a concept's generations (MIMA Tab. 5), with
  ``wilson_interval`` the 95% interval of such a proportion over the images judged.

The functions take per-concept numbers so they are checked by hand; ``set_similarity`` and
``paired_similarity`` turn image sets into those numbers through any ``Similarity``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch


def set_similarity(metric, a: torch.Tensor, b: torch.Tensor) -> float:
    """M(a, b): mean over all |a|·|b| pairs."""
    return float(metric.pairwise(a, b).mean())


def paired_similarity(metric, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over aligned pairs (a[i], b[i]) — the diagonal of the pairwise matrix."""
    if len(a) != len(b):
        raise ValueError(f"paired similarity needs aligned sets, got {len(a)} and {len(b)} images")
    return float(torch.diagonal(metric.pairwise(a, b)).mean())


MEMORIZATION_ROLES = ("L", "D")  # nearest training image by LPIPS and by the DINO role (issue 29)


def pairwise_distance(metric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(|a|, |b|) distances from a similarity backend: 1 − M for a similarity (LPIPS's ``1 − d`` gives
    back d itself, DINO's cosine gives 1 − cos); a backend that is already a distance
    (``higher_is_better = False``) is taken as it is."""
    sim = metric.pairwise(a, b)
    return 1.0 - sim if getattr(metric, "higher_is_better", True) else sim


def nearest_distances(metric, generations: torch.Tensor, training: torch.Tensor) -> torch.Tensor:
    """Per generation, the distance to its nearest training image (min over the training set): (|generations|,)."""
    if len(generations) == 0 or len(training) == 0:
        raise ValueError(f"nearest distance needs generations and training images, got {len(generations)} "
                         f"and {len(training)}")
    return pairwise_distance(metric, generations, training).min(dim=1).values


def nearest_distance(metric, generations: torch.Tensor, training: torch.Tensor) -> float:
    """Mean over generations of the distance to the nearest training image: lower = closer to copying."""
    return float(nearest_distances(metric, generations, training).mean())


def msgr(sim_without: Mapping[str, float], sim_with: Mapping[str, float]) -> float:
    """MSGR in % from per-concept M(x^r, x^A) (``sim_without``) and M(x^r, x^T) (``sim_with``)."""
    if not sim_without:
        raise ValueError("MSGR needs at least one target concept")
    if set(sim_without) != set(sim_with):
        raise ValueError(f"MSGR: concepts differ: {sorted(sim_without)} vs {sorted(sim_with)}")
    gaps = []
    for concept, base in sim_without.items():
        if abs(base) < 1e-12:
            raise ValueError(f"MSGR: M(x^r, x^A) is 0 for {concept!r}; the ratio is undefined")
        gaps.append((base - sim_with[concept]) / base)
    return 100.0 * sum(gaps) / len(gaps)


def mrsgr(paired_targets: Mapping[str, float], paired_others: Mapping[str, float]) -> float:
    """MRSGR in % from per-concept paired similarities M(x^T_n, x^A_n) of targets and of others."""
    if not paired_targets or not paired_others:
        raise ValueError("MRSGR needs target and other concepts")
    other = sum(paired_others.values()) / len(paired_others)
    target = sum(paired_targets.values()) / len(paired_targets)
    if abs(other) < 1e-12:
        raise ValueError("MRSGR: the others' mean paired similarity is 0; the ratio is undefined")
    return 100.0 * (other - target) / other


def top1_accuracy(classifier, images: torch.Tensor, concept: str) -> float | None:
    """Share of images the judge labels as ``concept``; None when the judge has no such class."""
    index = classifier.index_of(concept)
    if index is None:
        return None
    return float((classifier.logits(images).argmax(dim=1) == index).float().mean())


def mean_accuracy(per_concept: Mapping[str, float | None], concepts: Sequence[str]) -> float | None:
    """Tab. 5's form: the mean over concepts the judge knows."""
    values = [per_concept[c] for c in concepts if per_concept.get(c) is not None]
    return sum(values) / len(values) if values else None


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``accuracy`` observed over ``n`` images.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or 1.
    ``n == 0`` (nothing judged) gives (0.0, 1.0): the proportion is unconstrained.
    """
    if n < 0:
        raise ValueError(f"wilson_interval: n must be >= 0, got {n}")
    if not -1e-9 <= accuracy <= 1 + 1e-9:  # tolerate the rounding of a mean of proportions
        raise ValueError(f"wilson_interval: accuracy must be in [0, 1], got {accuracy}")
    if n == 0:
        return 0.0, 1.0
    accuracy = min(1.0, max(0.0, accuracy))
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) ** 0.5
    # at 0 (1) the bound is exactly 0 (1); the subtraction leaves rounding noise of ~1e-17
    low = 0.0 if accuracy == 0.0 else max(0.0, centre - half)
    high = 1.0 if accuracy == 1.0 else min(1.0, centre + half)
    return low, high
