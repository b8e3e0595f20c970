"""Claims tables: every branch of the verdict rule, rows, the one-line summary."""

import math

import numpy as np
import pandas as pd
import pytest

from kdlib import claims as cl


@pytest.mark.parametrize("low, high, n, expected", [
    (-0.85, -0.28, 3, "holds"),          # wholly below 0
    (0.10, 0.60, 3, "does not hold"),    # wholly above 0
    (-0.40, 0.20, 3, "inconclusive"),    # straddles
    (-0.40, 0.0, 3, "inconclusive"),     # touches the null
    (-0.85, -0.28, 2, "inconclusive"),   # too few points
    (math.nan, math.nan, 5, "inconclusive"),
])
def test_less(low, high, n, expected):
    assert cl.verdict("less", low, high, n) == expected


@pytest.mark.parametrize("low, high, expected", [
    (0.1, 0.6, "holds"), (-0.6, -0.1, "does not hold"), (-0.1, 0.3, "inconclusive")])
def test_greater_with_null(low, high, expected):
    assert cl.verdict("greater", low, high, 4) == expected
    # shifting the null moves the verdict with it
    assert cl.verdict("greater", low + 1, high + 1, 4, null=1.0) == expected


@pytest.mark.parametrize("low, high, expected", [
    (-20, 25, "holds"),            # inside the band [-30, 30]
    (-30, 30, "holds"),            # the band's edges are inside
    (35, 60, "does not hold"),     # wholly above the band
    (-89, -57, "does not hold"),   # wholly below
    (-50, 10, "inconclusive"),     # overlaps the lower edge
    (-40, 40, "inconclusive"),     # wider than the band
])
def test_insensitive(low, high, expected):
    assert cl.verdict("insensitive", low, high, 3, tolerance=30) == expected


def test_insensitive_small_n_is_inconclusive():
    assert cl.verdict("insensitive", -1, 1, 2, tolerance=30) == "inconclusive"
    assert cl.verdict("insensitive", -1, 1, 2, tolerance=30, min_n=2) == "holds"


@pytest.mark.parametrize("kwargs, err", [
    ({"kind": "smaller"}, ValueError),
    ({"kind": "insensitive"}, ValueError),                  # no tolerance
    ({"kind": "insensitive", "tolerance": 0.0}, ValueError),
    ({"kind": "less", "tolerance": 1.0}, ValueError),       # tolerance on a directional claim
    ({"low": 1.0, "high": 0.0}, ValueError),                # inverted interval
    ({"n": -1}, ValueError),
    ({"low": "a"}, TypeError),
    ({"low": True}, TypeError),
])
def test_bad_inputs(kwargs, err):
    args = {"kind": "less", "low": -1.0, "high": -0.5, "n": 3, **kwargs}
    with pytest.raises(err):
        cl.verdict(**args)


def test_row_table_and_line():
    rows = [cl.claim("KD falls with teacher ECE", "Table 6: -92% to -76%", -68.04, -85.2,
                     -28.0, 3, "less", unit="%", digits=0),
            cl.claim("DIST insensitive", "Table 6: 0.5% to 1.8%", -77.0, -89.0, -57.0, 3,
                     "insensitive", tolerance=30, unit="%", digits=0)]
    t = cl.claims_table(rows)
    assert list(t.columns) == list(cl.COLUMNS)
    assert list(t["verdict"]) == ["holds", "does not hold"]
    assert t.loc[0, "ours"] == "-68%" and t.loc[0, "interval"] == (-85.0, -28.0)
    assert t.loc[1, "rule"] == "|x| <= 30%" and t.loc[0, "rule"] == "< 0%"
    assert cl.verdict_line(t) == ("KD falls with teacher ECE: holds, -68% [-85, -28]; "
                                  "DIST insensitive: does not hold, -77% [-89, -57]")
    assert cl.counts(t) == {"holds": 1, "does not hold": 1, "inconclusive": 0}
    both = cl.concat(t, t)
    assert len(both) == 4 and cl.counts(both)["holds"] == 2
    assert cl.verdict_line(cl.claims_table([])) == ""


def test_table_rejects_foreign_rows():
    with pytest.raises(ValueError):
        cl.claims_table([{"claim": "x"}])
    with pytest.raises(TypeError):
        cl.verdict_line(pd.DataFrame().to_dict())
    with pytest.raises(ValueError):
        cl.verdict_line(pd.DataFrame({"claim": ["x"]}))


def test_spearman_claim_decreasing_and_too_few_cells():
    rng = np.random.default_rng(0)
    rows = [{"temperature": t, "seed": s, "ece": t + 0.01 * rng.normal(),
             "acc": 1.0 - 0.1 * t + 0.01 * rng.normal()}
            for t in (1, 2, 3, 4, 5) for s in range(3)]
    df = pd.DataFrame(rows)
    r = cl.spearman_claim(df, "ece", "acc", "falls", "paper", "less", n_boot=200, scale=100,
                          unit="%", digits=0)
    assert r["verdict"] == "holds" and r["ours"] == "-100%" and r["n"] == 3
    one_seed = cl.spearman_claim(df[df.seed == 0], "ece", "acc", "falls", "p", "less",
                                 n_boot=50)
    assert one_seed["verdict"] == "inconclusive" and one_seed["n"] == 1
    two_cells = cl.spearman_claim(df[df.temperature <= 2], "ece", "acc", "falls", "p", "less")
    assert two_cells["verdict"] == "inconclusive" and two_cells["ours"] == "nan"


# ------------------------------------------------- each experiment module's claims(...)

def _sweep_frame(kd_slope, dist_slope, seeds=3, pair="a -> b (digits)"):
    rng = np.random.default_rng(1)
    rows = []
    for t, ece in zip((1, 2, 3, 4, 5, 6), (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)):
        for s in range(seeds):
            for loss, slope in (("kd", kd_slope), ("dist", dist_slope)):
                noise = 0.002 * rng.normal()
                rows.append({"pair": pair, "loss": loss, "temperature": float(t), "seed": s,
                             "teacher_ece_at_tau": ece, "accuracy": 0.9 + slope * ece + noise})
    return pd.DataFrame(rows)


def test_temperature_sweep_claims():
    from kdlib.experiments import temperature_sweep as ts

    t = ts.claims(_sweep_frame(-0.2, 0.0), n_boot=200)
    assert list(t["claim"]) == ["KD falls as teacher ECE rises (a -> b)",
                                "DIST insensitive to teacher ECE (a -> b)"]
    # KD falls with ECE: holds; DIST flat up to noise: its rho is within the band or not
    assert t.loc[0, "verdict"] == "holds" and t.loc[0, "n"] == 3
    t2 = ts.claims(_sweep_frame(-0.2, -0.2), n_boot=200)
    assert t2.loc[1, "verdict"] == "does not hold"  # DIST falls just as KD: rho ~ -100%
    assert ts.claims(_sweep_frame(-0.2, -0.2, seeds=1), n_boot=50)["verdict"].eq(
        "inconclusive").all()
    with pytest.raises(ValueError):
        ts.claims(_sweep_frame(-0.2, 0.0).drop(columns="seed"))


def test_feature_kd_claims():
    from kdlib.experiments import feature_kd as fk

    df = _sweep_frame(-0.2, -0.2).drop(columns="pair")
    df = pd.concat([df, df[df.loss == "kd"].assign(loss="fitnet")], ignore_index=True)
    t = fk.claims(df, n_boot=200).set_index("claim")
    assert t.loc["fitnet falls as teacher ECE rises", "verdict"] == "holds"
    assert t.loc["DIST insensitive to teacher ECE", "verdict"] == "does not hold"


def test_gmm_optimal_teacher_claims():
    from kdlib.experiments import gmm_optimal_teacher as g

    rows = []
    for r in range(5):
        rows.append({"classes": 10, "arm": g.ONE_HOT, "run": r, "target_ece": 0.0,
                     "accuracy": 0.80 + 0.001 * r})
        for k, (arm, ece) in enumerate(((g.POSTERIOR, 0.01), ("tau=2", 0.05),
                                        ("tau=4", 0.10))):
            rows.append({"classes": 10, "arm": arm, "run": r, "target_ece": ece,
                         "accuracy": 0.85 - 0.01 * k + 0.001 * r})
    runs = pd.DataFrame(rows).assign(accuracy_pct=lambda d: 100 * d["accuracy"])
    t = g.claims(runs, n_boot=200)
    assert list(t["verdict"]) == ["holds", "holds"]
    assert t.loc[0, "ours"] == "5.00 pp" and t.loc[0, "n"] == 5


def test_teacher_assistant_claims():
    from kdlib.experiments import teacher_assistant as ta

    rows = []
    for a, (params, ece) in enumerate(((1000, 0.05), (500, 0.10), (250, 0.20))):
        for s in range(3):
            for tau in (1.8, 4.0):
                rows.append({"dataset": "d", "teacher": "T", "assistant_name": f"A{a}",
                             "student": "S", "tau": tau, "seed": s, "assistant_params": params,
                             "assistant_ece_at_tau": ece + 0.001 * s,
                             "student_accuracy": 0.9 - ece / 4 - 0.01 * (tau > 2)
                             - 0.0001 * s})
    df = pd.DataFrame(rows)
    t = ta.claims(df, 1.8, [], [1.8, 4.0], n_boot=200)
    assert len(t) == 2  # no tau chains given: no tau claim
    assert t.loc[0, "n"] == 9 and t.loc[0, "verdict"] == "holds"  # lower ECE, better student
    assert t.loc[1, "verdict"] == "holds"  # larger assistant, lower ECE


def test_early_stopped_claims():
    from kdlib.experiments import early_stopped_teacher as es

    rows = []
    for s in range(3):
        for tau in (1.0, 1.6, 3.0, 4.0):
            for training, epoch, final, ece, acc in (("full", 10, False, 0.02, 0.91),
                                                     ("full", 20, True, 0.05, 0.90),
                                                     ("few", 8, True, 0.01, 0.92)):
                rows.append({"teacher": "T", "student": "S", "training": training,
                             "final": final, "teacher_epoch": epoch, "temperature": tau,
                             "seed": s, "teacher_accuracy": 0.95, "teacher_ece": ece,
                             "teacher_ece_at_tau": ece * tau,
                             "student_accuracy": acc + 0.001 * s * (training == "few")})
    df = pd.DataFrame(rows)
    t = es.claims(df, [1.0, 1.6, 3.0], [1.6, 3.0, 4.0])
    assert len(t) == 1 + 3 + 1 + 3
    # teacher ECE claims over 3 taus, every difference negative: holds
    assert t.loc[0, "verdict"] == "holds" and t.loc[0, "n"] == 3
    # the early student is 1 point better in every seed (zero spread): holds
    assert (t.loc[1:3, "verdict"] == "holds").all()
    assert t.loc[1, "ours"] == "1.00 pp"
    assert t.loc[4, "verdict"] == "holds" and (t.loc[5:, "verdict"] == "holds").all()
    # with two taus the teacher-side claim has n = 2: inconclusive
    assert es.claims(df, [1.0, 1.6], [1.6, 3.0]).loc[0, "verdict"] == "inconclusive"


def test_show_prints_the_table_and_its_verdict_line_outside_ipython(capsys):
    from kdlib import claims as cl
    from kdlib.headline import VERDICT_MIMETYPE

    table = cl.claims_table([
        cl.claim("KD falls with teacher ECE", "Fig. 2", -68, -85, -28, 5, "less", unit="%"),
        cl.claim("DIST insensitive", "Fig. 2", -10, -40, 5, 2, "insensitive", tolerance=30,
                 unit="%")])
    cl.show(table)
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ("Verdicts (holds 1, does not hold 0, inconclusive 1): KD falls with "
                       "teacher ECE: holds, -68.00% [-85, -28]; DIST insensitive: "
                       "inconclusive, -10.00% [-40, 5]")
    assert out[0].split() == ["claim", "paper_evidence", "ours", "interval", "n", "verdict",
                              "rule"]
    mark = cl.verdict_bundle(table)[VERDICT_MIMETYPE]
    assert mark["counts"] == {"holds": 1, "does not hold": 0, "inconclusive": 1}
    assert [c["verdict"] for c in mark["claims"]] == ["holds", "inconclusive"]
    assert cl.verdict_bundle(cl.claims_table([]))["text/plain"] == "Verdicts: no claims"
    with pytest.raises(TypeError, match="claims table"):
        cl.show([1, 2])
