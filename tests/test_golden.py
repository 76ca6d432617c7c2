"""Speed-ups change no output: today's code reproduces the golden run of the code before them.

Measured scores (per concept: ``sim/*``, ``paired/*``, ``acc``, ``nn/*``, ``nn-ref/*``) must lie within ``TOLERANCE``
(1e-4, absolute) of the golden values. The derived percentages (MSGR, MRSGR) are ratios of those
measurements, so their tolerance is the first-order propagation of 1e-4 through the ratio (a
similarity near 0 in this 3-step grid makes MSGR sensitive; the bound says by how much).
"""
import json

import pytest

from golden_run import GOLDEN, GROUP, TOLERANCE, row_key, run_golden


def _propagated(row: dict, measured: dict) -> float:
    """|Δ| allowed for a derived row when each measurement it uses may move by TOLERANCE."""
    from immunobench.cards import get_card

    metric, step, defense = row["metric"], row["step"], row["defense"]
    group = get_card("relearn-style").group(GROUP)
    targets = group.targets
    if metric.startswith(("acc/", "nn/", "nn-ref/")):  # means of measurements
        return TOLERANCE
    role = metric.split("/")[1]

    def value(concept, name, d=defense):
        return measured[(row["group"], concept, d, row["attack"], row["seed"], step, name)]

    if metric.startswith("MSGR/"):  # 100/N Σ (1 − T_n / A_n)
        terms = [1 / abs(value(c, f"sim/{role}", "none")) + abs(value(c, f"sim/{role}")) / value(c, f"sim/{role}", "none") ** 2
                 for c in targets]
        return 100 * TOLERANCE * sum(terms) / len(terms)
    if metric.startswith("MRSGR/"):  # 100 (1 − T̄ / Ō)
        others = group.others
        t = sum(value(c, f"paired/{role}") for c in targets) / len(targets)
        o = sum(value(c, f"paired/{role}") for c in others) / len(others)
        return 100 * TOLERANCE * (1 / abs(o) + abs(t) / o**2)
    raise AssertionError(f"no tolerance for {metric}")


@pytest.fixture(scope="module", params=[2, 1], ids=["two-worker-processes", "in-process"])
def golden_and_now(request, tmp_path_factory):
    """Today's scores computed both ways: in two worker processes (the default on 2 cores) and in this process."""
    golden = {row_key(r): r["value"] for r in json.loads(GOLDEN.read_text())["rows"]}
    now = {row_key(r): r["value"] for r in run_golden(tmp_path_factory.mktemp("golden"), workers=request.param)}
    return golden, now


def test_the_same_rows(golden_and_now):
    golden, now = golden_and_now
    assert set(now) == set(golden)


def test_measured_scores_within_tolerance(golden_and_now):
    golden, now = golden_and_now
    measured = [k for k in golden if k[1] != "*"]
    assert len(measured) > 100
    worst = max(measured, key=lambda k: abs(now[k] - golden[k]))
    assert abs(now[worst] - golden[worst]) <= TOLERANCE, (worst, golden[worst], now[worst])


def test_derived_scores_within_propagated_tolerance(golden_and_now):
    golden, now = golden_and_now
    derived = [k for k in golden if k[1] == "*"]
    assert {k[6].split("/")[0] for k in derived} == {"MSGR", "MRSGR", "acc", "nn", "nn-ref"}
    for k in derived:
        row = dict(zip(("group", "concept", "defense", "attack", "seed", "step", "metric"), k))
        bound = _propagated(row, golden)
        assert abs(now[k] - golden[k]) <= bound, (k, golden[k], now[k], bound)
