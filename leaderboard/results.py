"""The results schema (long format) and the group-level scores derived from per-concept rows.

Every row is (task, group, concept, defense, attack, seed, step, metric, value). Per concept:
``sim/{C,D,L}`` = M(x^r, x) of the generations to the references, ``acc`` = the judge's top-1,
``paired/{C,D,L}`` = M(x^T, x^A) at the reporting step, ``nn/{L,D}`` = the mean over a target's
generations of the distance to the nearest attack-training image (every checkpoint), ``nn-ref/{L,D}``
= the same for the target's references (defense ``none``, step -1: the baseline of no copying).
Derived per group (concept ``*``): ``nn/{L,D}`` and ``nn-ref/{L,D}`` as the mean over the targets,
``MSGR/{C,D,L}`` at every checkpoint, ``MRSGR/{C,D,L}`` at the reporting step, ``acc/targets``
at every checkpoint and ``acc/others`` before the attack (step 0: the start model for ``none``, the
immunized model otherwise) and at the reporting step — all from ``metrics.scores``.
"""
from __future__ import annotations

import pandas as pd

from immunobench.metrics.scores import MEMORIZATION_ROLES, mean_accuracy, mrsgr, msgr
from immunobench.plugins import SIMILARITY_ROLES, similarity_judges

COLUMNS = ["task", "group", "concept", "defense", "attack", "seed", "step", "metric", "value"]


def derive_scores(rows: list[dict], card) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        return df
    derived = []
    for (task, group, attack, seed), cell in df.groupby(["task", "group", "attack", "seed"]):
        g = card.group(group)
        targets, others = g.targets, g.others
        probes = [g.probe(c)[0] for c in others]  # what the classifier judges for the others (personal instances: their categories)
        base = {"task": task, "group": group, "concept": "*", "attack": attack, "seed": seed}
        for (defense, step), part in cell.groupby(["defense", "step"]):
            acc = dict(zip(part.loc[part.metric == "acc", "concept"], part.loc[part.metric == "acc", "value"]))
            for label, concepts in (("targets", targets), ("others", probes)):
                value = mean_accuracy(acc, concepts) if all(c in acc for c in concepts) else None
                if value is not None:
                    derived.append({**base, "defense": defense, "step": step, "metric": f"acc/{label}", "value": value})
            for metric in (f"{name}/{role}" for name in ("nn", "nn-ref") for role in MEMORIZATION_ROLES):
                nearest = _per_concept(part, metric, targets)
                if len(nearest) == len(targets):
                    derived.append({**base, "defense": defense, "step": step, "metric": metric,
                                    "value": sum(nearest.values()) / len(nearest)})
            if defense == "none":
                continue
            without = cell[(cell.defense == "none") & (cell.step == step)]
            for role in SIMILARITY_ROLES:
                sim_with = _per_concept(part, f"sim/{role}", targets)
                sim_without = _per_concept(without, f"sim/{role}", targets)
                if sim_with and sim_without and len(sim_with) == len(sim_without) == len(targets):
                    derived.append({**base, "defense": defense, "step": step, "metric": f"MSGR/{role}",
                                    "value": msgr(sim_without, sim_with)})
                paired_t = _per_concept(part, f"paired/{role}", targets)
                paired_o = _per_concept(part, f"paired/{role}", others)
                if len(paired_t) == len(targets) and len(paired_o) == len(others) and others:
                    derived.append({**base, "defense": defense, "step": step, "metric": f"MRSGR/{role}",
                                    "value": mrsgr(paired_t, paired_o)})
    derived = pd.DataFrame(derived, columns=COLUMNS)
    if card.kind == "personalization":
        derived = pd.concat([derived, mean_over_attacks(derived)], ignore_index=True)
    out = pd.concat([df, derived], ignore_index=True)
    return out.astype({"seed": int, "step": int, "value": float})


MEAN_OVER_ATTACKS = "mean"  # the ``attack`` of rows averaged over a run's attacks


def mean_over_attacks(derived: pd.DataFrame) -> pd.DataFrame:
    """MIMA §5.2 reports personalization averaged over its four adaptation methods: per (group,
    defense, seed, step), the mean of each MSGR/MRSGR over the run's attacks, where every attack has
    it (a failed attack leaves the mean out rather than averaging fewer)."""
    part = derived[derived.metric.str.startswith(("MSGR/", "MRSGR/"))]
    attacks = derived.attack.nunique()
    if part.empty or attacks < 2:
        return pd.DataFrame(columns=COLUMNS)
    keys = ["task", "group", "concept", "defense", "seed", "step", "metric"]
    agg = part.groupby(keys).value.agg(["mean", "count"]).reset_index()
    agg = agg[agg["count"] == attacks].rename(columns={"mean": "value"}).drop(columns="count")
    return agg.assign(attack=MEAN_OVER_ATTACKS)[COLUMNS]


def run_similarity_judges(manifest: dict) -> dict[str, type]:
    """Role (C, D, L) → the similarity plugin that played it in a run (``label``, ``higher_is_better``):
    the manifest's metric family, or (runs that predate it) its backbone's."""
    family = manifest["resolved"].get("metric_family")
    if family is None:
        from immunobench.backbones import resolve_spec

        family = resolve_spec(manifest["model"]["name"])[1].metric_family
    return similarity_judges(family)


def _per_concept(part: pd.DataFrame, metric: str, concepts) -> dict[str, float]:
    sel = part[(part.metric == metric) & part.concept.isin(list(concepts))]
    return dict(zip(sel.concept, sel.value))
