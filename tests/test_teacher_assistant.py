"""TAKD experiment: configuration, analysis against hand-computed values, one tiny run."""

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from kdlib import presets
from kdlib.experiments import teacher_assistant as ta
from kdlib.recipe import Recipe

matplotlib.use("Agg")




# ------------------------------------------------------------------ configuration


def test_recipe_from_spec_forms():
    assert ta.recipe_from_spec("paper") == Recipe.preset("paper")
    r = ta.recipe_from_spec({"preset": "default", "checkpoint_every": 2})
    assert r.epochs == 30 and r.milestones == (19, 22, 26) and r.checkpoint_every == 2
    r = ta.recipe_from_spec({"epochs": 15, "milestones": [9, 11, 13]})
    assert r.milestones == (9, 11, 13) and r.lr == 0.05
    with pytest.raises(TypeError, match="preset name or a dict"):
        ta.recipe_from_spec(3)
    with pytest.raises(ValueError, match="bad recipe spec"):
        ta.recipe_from_spec({"epochs": 3, "learning_rate": 0.1})
    with pytest.raises(ValueError, match="unknown recipe preset"):
        ta.recipe_from_spec("long")


@pytest.mark.parametrize("scale", ["smoke", "default", "paper"])
def test_presets_build_valid_grids(scale, tmp_path, monkeypatch):
    # with every data set present (fake files), every table's chains are in the grid
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    from tests.fake_datasets import write_cifar100, write_tinyimagenet

    write_cifar100(tmp_path / "data")
    write_tinyimagenet(tmp_path / "data")
    cfg = presets.get(ta.NAME, scale)
    grid = ta.build_grid(cfg)
    for cell in grid:
        ta.recipe_from_spec(cell["teacher_recipe"])
        ta.recipe_from_spec(cell["distill_recipe"])
        assert set(cell) == {"data", "teacher", "assistant", "student", "tau", "seed",
                             "teacher_recipe", "distill_recipe", "teacher_seed"}
    strip = [ta._check_chain(c) for c in cfg["size_chains"] + cfg["seed_chains"]]
    n_size = len({json.dumps(c, sort_keys=True) for c in strip}) * len(cfg["seeds"])
    n_tau = len(cfg["tau_chains"]) * len(cfg["tau_values"]) * len(cfg["seeds"])
    if cfg["data"] == cfg["tau_data"]:
        # a tau chain that is also a size chain at size_tau is computed once
        dup = sum(ta._check_chain(c) in strip for c in cfg["tau_chains"]) * len(cfg["seeds"])
        assert cfg["size_tau"] in cfg["tau_values"]
    else:
        dup = 0
    assert len(grid) == n_size + n_tau - dup
    # an assistant is trained once per (data, teacher, assistant, tau, seed): chains sharing
    # it (here: the tau chain at size_tau and its size chain) count it once
    need = {json.dumps({k: c[k] for k in ("data", "teacher", "assistant", "tau", "seed")},
                       sort_keys=True) for c in grid if c["assistant"] is not None}
    assert len(ta.assistant_keys(grid)) == len(need)


def test_default_and_paper_presets_say_what_the_issue_asks():
    d = presets.get(ta.NAME, "default")
    assert d["data"]["name"] == "digits" and d["size_tau"] == 1.8
    assert len({c["assistant"] for c in d["size_chains"]} - {None}) >= 3
    assert len(d["seeds"]) >= 2 and d["tau_values"] == [1.8, 4.0]
    p = presets.get(ta.NAME, "paper")
    assert p["data"]["name"] == "cifar100" and p["tau_data"]["name"] == "tinyimagenet"
    # the CRD/RepDistiller recipe, the same teachers as the other notebooks' paper presets
    assert ta.recipe_from_spec(p["teacher_recipe"]) == Recipe.preset("paper")
    assert ta.recipe_from_spec(p["teacher_recipe"]).milestones == (150, 180, 210)
    arch = {"WRN-28-3": "wrn_28_3", "ResNet110": "resnet110", "WRN-28-2": "wrn_28_2",
            "WRN-28-1": "wrn_28_1", "ResNet56": "resnet56", "ResNet32": "resnet32",
            "ResNet20": "resnet20", "ResNet14": "resnet14", "WRN-22-1": "wrn_22_1",
            "WRN-28-4": "wrn_28_4", "RESNET14": "resnet14", "WRN-16-3": "wrn_16_3",
            "WRN-16-1": "wrn_16_1"}
    from kdlib.paper import paper_table

    def chains(key):
        return [ta._check_chain(c) for c in p[key]]

    for table, key in (("table2", "size_chains"), ("table7", "seed_chains")):
        for _, r in paper_table(table).iterrows():
            chain = {"teacher": arch[r.teacher], "assistant": arch[r.assistant],
                     "student": arch[r.student]}
            assert chain in chains(key), (table, chain)
    # Table 3: the blank assistant read as WRN-28-2 (a TAKD chain, not plain KD)
    assert {"teacher": "wrn_28_3", "assistant": "wrn_28_2", "student": "wrn_28_1"} in \
        chains("tau_chains")
    assert None not in {c["assistant"] for c in p["tau_chains"]}
    assert p["seeds"] == [0, 1, 2, 5]  # Table 7's seeds
    # chains carry selection names; a selection keeps one table
    assert p["size_chains"][0]["name"] == "wrn_28_3->resnet110->resnet14"
    only3 = presets.get(ta.NAME, "paper", select="table=3")
    assert only3["size_chains"] is None and only3["seed_chains"] is None
    assert len(only3["tau_chains"]) == 2
    one = presets.get(ta.NAME, "paper", select="chain=wrn_28_4->* seed=5")
    assert [c["name"] for c in one["seed_chains"]] == [
        "wrn_28_4->wrn_28_2->wrn_22_1", "wrn_28_4->wrn_28_1->wrn_22_1",
        "wrn_28_4->wrn_28_2->resnet14", "wrn_28_4->wrn_28_1->resnet14"]
    assert one["size_chains"] == [] and one["seeds"] == [5]


def test_skipped_tables_missing_tinyimagenet_keeps_table2(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    from tests.fake_datasets import write_cifar100

    write_cifar100(tmp_path / "data")
    cfg = presets.get(ta.NAME, "paper")
    skipped = ta.skipped_tables(cfg)
    assert [t for t, _ in skipped] == ["3"]
    assert "tiny-imagenet-200" in skipped[0][1]
    grid = ta.build_grid(cfg)
    assert grid and {c["data"]["name"] for c in grid} == {"cifar100"}
    # nothing present: every table skipped, an empty grid (not an error)
    (tmp_path / "data" / "cifar-100-python").rename(tmp_path / "data" / "elsewhere")
    assert [t for t, _ in ta.skipped_tables(cfg)] == ["2", "7", "3"]
    assert ta.build_grid(cfg) == []
    assert [t for t, _ in ta.skipped_tables(presets.get(ta.NAME, "paper",
                                                          select="table=2"))] == ["2", "7", "3"]


def test_build_grid_rejects_bad_configs():
    cfg = presets.get(ta.NAME, "smoke")
    with pytest.raises(ValueError, match="lacks"):
        ta.build_grid({k: v for k, v in cfg.items() if k != "seeds"})
    bad = dict(cfg, size_chains=[{"teacher": "resnet8", "student": "resnet8"}])
    with pytest.raises(ValueError, match="teacher, assistant, student"):
        ta.build_grid(bad)
    with pytest.raises(ValueError, match="> 0"):
        ta.build_grid(dict(cfg, size_tau=0.0))
    with pytest.raises(ValueError, match="empty"):
        ta.build_grid(dict(cfg, seeds=[]))


# ------------------------------------------------------------------ analysis


def _frame(assistants, eces, accs, seeds=(0, 1, 2), tau=1.8, params=None):
    """A tidy frame; eces/accs: {assistant: [one value per seed]}."""
    rows = []
    for a in assistants:
        for i, s in enumerate(seeds):
            rows.append({"dataset": "digits", "teacher": "T", "assistant_name": a,
                         "student": "S", "tau": tau, "seed": s,
                         "assistant_params": (params or {}).get(a, 0),
                         "assistant_ece_at_tau": eces[a][i],
                         "assistant_accuracy": 0.9, "student_accuracy": accs[a][i]})
    return pd.DataFrame(rows)


def test_bootstrap_rows_spearman_hand_values():
    r = ta.bootstrap_rows_spearman([1, 2, 3, 4], [1, 3, 2, 4], n_boot=50)
    # rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert r["rho"] == pytest.approx(0.8) and r["n"] == 4
    assert -1 <= r["lo"] <= r["hi"] <= 1
    m = ta.bootstrap_rows_spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], n_boot=100)
    # every resample of a monotone relation (ties included) is still rank-correlated 1
    assert m["rho"] == pytest.approx(1.0)
    assert m["lo"] == pytest.approx(1.0) and m["hi"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="level"):
        ta.bootstrap_rows_spearman([1, 2, 3], [1, 2, 3], level=1.5)
    with pytest.raises(ValueError, match="at least 3"):
        ta.bootstrap_rows_spearman([1, 2], [1, 2])


def test_calibration_vs_size_separates_calibration_from_size():
    # accuracy = 1 - ECE exactly, while the largest assistant is not the best calibrated:
    # assistant means: A (300 params) ECE .10, B (200) .05, C (100) .20
    eces = {"A": [0.09, 0.10, 0.11], "B": [0.04, 0.05, 0.06], "C": [0.19, 0.20, 0.21]}
    accs = {a: [1 - e for e in v] for a, v in eces.items()}
    df = _frame("ABC", eces, accs, params={"A": 300, "B": 200, "C": 100})
    plain = df[df.assistant_name == "A"].assign(assistant_name="none", student_accuracy=0.5)
    other_tau = df.assign(tau=4.0, student_accuracy=0.0)
    corr = ta.calibration_vs_size(pd.concat([df, plain, other_tau]), 1.8, n_boot=200)
    got = {(r.predictor, r.level): r for r in corr.itertuples()}
    ece_a = got[("assistant ECE at tau", "assistants")]
    assert ece_a.rho == pytest.approx(-1.0) and ece_a.lo == ece_a.hi == pytest.approx(-1.0)
    assert ece_a.n == 3  # plain KD and the other tau are left out
    # size ranks A3 B2 C1 vs accuracy ranks A2 B3 C1: 1 - 6 * 2 / 24 = 0.5
    assert got[("assistant parameters", "assistants")].rho == pytest.approx(0.5)
    assert got[("assistant ECE at tau", "chains")].rho == pytest.approx(-1.0)
    assert got[("assistant ECE at tau", "chains")].n == 9
    size_chain = got[("assistant parameters", "chains")].rho
    assert abs(size_chain) < 1
    v = ta.verdict(corr)
    assert list(v["follows"]) == ["calibration"]
    assert v["rho_size"].iloc[0] == pytest.approx(size_chain)


def test_calibration_vs_size_needs_three_assistants():
    eces = {"A": [0.1, 0.2, 0.3], "B": [0.2, 0.3, 0.4]}
    df = _frame("AB", eces, eces, params={"A": 2, "B": 1})
    assert ta.calibration_vs_size(df, 1.8, n_boot=10).empty


def test_verdict_tie_and_missing():
    corr = pd.DataFrame([
        {"teacher": "T", "student": "S", "predictor": "assistant ECE at tau", "level": "chains",
         "rho": -0.5},
        {"teacher": "T", "student": "S", "predictor": "assistant parameters", "level": "chains",
         "rho": 0.5},
        {"teacher": "U", "student": "S", "predictor": "assistant ECE at tau", "level": "chains",
         "rho": float("nan")},
        {"teacher": "U", "student": "S", "predictor": "assistant parameters", "level": "chains",
         "rho": 0.2},
    ])
    assert list(ta.verdict(corr)["follows"]) == ["tie", "n/a"]
    # ECE the stronger predictor but with the sign opposite to the paper's claim
    corr.loc[0, "rho"], corr.loc[2, "rho"] = 0.9, -0.9
    assert list(ta.verdict(corr)["follows"]) == ["neither", "calibration"]
    corr.loc[1, "rho"] = -0.95
    assert list(ta.verdict(corr)["follows"]) == ["size", "calibration"]


def test_paper_calibration_vs_size_hand_values():
    p = ta.paper_calibration_vs_size()
    got = {(r.source, r.teacher, r.student, r.predictor): r.rho for r in p.itertuples()}
    # Table 2, WRN-28-3 -> ResNet14: ECE 9.57, 9.94, 9.92 vs acc 68.44, 67.96, 67.97
    assert got[("Table 2", "WRN-28-3", "ResNet14", "assistant ECE at tau")] == pytest.approx(-1)
    # sizes 1.7, 1.5, 0.38: ranks 3 2 1 vs accuracy ranks 3 1 2 -> 1 - 6 * 2 / 24
    assert got[("Table 2", "WRN-28-3", "ResNet14", "assistant parameters")] == pytest.approx(0.5)
    assert got[("Table 2", "ResNet110", "ResNet14", "assistant ECE at tau")] == pytest.approx(-1)
    assert got[("Table 2", "ResNet110", "ResNet14", "assistant parameters")] == pytest.approx(1)
    # the WRN-22-1 group has two assistants only
    assert ("Table 2", "WRN-28-3", "WRN-22-1", "assistant parameters") not in got
    # Table 7, WRN-28-4 -> ResNet14 (4 chains): ECE ranks 2 4 1 3 vs acc ranks 2 1 4 3
    assert got[("Table 7", "WRN-28-4", "ResNet14", "assistant ECE at tau")] == pytest.approx(-0.8)
    # sizes 1.5, .38, 1.5, .38 (tied ranks 3.5, 1.5): Pearson of ranks = 2 / sqrt(4 * 5)
    assert got[("Table 7", "WRN-28-4", "ResNet14", "assistant parameters")] == pytest.approx(
        2 / math.sqrt(20))


def test_chain_table_and_takd_gain():
    eces = {"A": [0.10, 0.20, 0.30], "none": [0.5, 0.5, 0.5]}
    accs = {"A": [0.90, 0.80, 0.85], "none": [0.80, 0.80, 0.90]}
    df = _frame(["A", "none"], eces, accs, params={"A": 250_000, "none": 1_000_000})
    t = ta.chain_table(df)
    a = t[t.assistant_name == "A"].iloc[0]
    assert a.assistant_ece_at_tau == pytest.approx(20.0)
    assert a.assistant_ece_std == pytest.approx(10.0)
    assert a.student_accuracy == pytest.approx(85.0)
    assert a.student_accuracy_std == pytest.approx(5.0)
    assert a.assistant_params_m == pytest.approx(0.25) and a.n == 3
    s = ta.size_table(df, 1.8)
    assert list(s["assistant_name"]) == ["A", "none"]  # plain KD last
    st = ta.seed_table(df, 1.8)
    assert list(st.columns) == ["teacher", "assistant", "student", "assistant_ece",
                                "student_accuracy", "seed"]
    assert st["assistant_ece"].tolist() == pytest.approx([10.0, 20.0, 30.0])  # no plain KD
    g = ta.takd_gain(df, 1.8)
    # per seed gains: +10, 0, -5 points
    assert g["gain_mean"].iloc[0] == pytest.approx(5 / 3)
    assert g["gain_std"].iloc[0] == pytest.approx(np.std([10, 0, -5], ddof=1))
    assert g["n"].iloc[0] == 3


def test_tau_effect_pairs_seeds():
    eces = {"A": [0.1, 0.1, 0.1]}
    low = _frame("A", eces, {"A": [0.90, 0.80, 0.85]}, tau=1.8)
    high = _frame("A", eces, {"A": [0.88, 0.80, 0.80]}, tau=4.0)
    other = _frame("B", {"B": [0.1] * 3}, {"B": [0.1] * 3}, tau=4.0)
    chains = [{"teacher": "T", "assistant": "A", "student": "S"}]
    e = ta.tau_effect(pd.concat([low, high, other]), chains, 1.8, 4.0).iloc[0]
    # per seed: -2, 0, -5 points
    assert e["diff"] == pytest.approx(-7 / 3) and e["n"] == 3
    assert e["std"] == pytest.approx(np.std([-2, 0, -5], ddof=1))
    assert e["lo"] < e["diff"] < e["hi"]
    t = ta.tau_table(pd.concat([low, high, other]), chains)
    assert list(t["tau"]) == [1.8, 4.0] and list(t["assistant_name"]) == ["A", "A"]


def test_tidy_and_tau_table():
    frame = pd.DataFrame([
        {"data": {"name": "digits"}, "teacher": "T", "assistant": None, "student": "S",
         "tau": 1.8, "seed": 0, "_key": "k"},
        {"data": {"name": "digits"}, "teacher": "T", "assistant": "A", "student": "S",
         "tau": 4.0, "seed": 0, "_key": "k2"},
    ])
    df = ta.tidy(frame)
    assert list(df["assistant_name"]) == ["none", "A"]
    assert list(df["dataset"]) == ["digits", "digits"] and "_key" not in df
    with pytest.raises(ValueError, match="missing"):
        ta.tidy(frame.drop(columns="tau"))


def test_beside_paper_has_both_sources():
    ours = pd.DataFrame([{"teacher": "T", "assistant_name": "A", "assistant_params_m": 0.1,
                          "student": "S", "tau": 1.8, "assistant_ece_at_tau": 3.0,
                          "student_accuracy": 97.0}])
    b = ta.beside_paper(ours)
    assert list(b["source"].unique()) == ["ours", "paper (CIFAR-100)"]
    assert len(b) == 1 + 8


# ------------------------------------------------------------------ end to end


@pytest.fixture()
def tiny_cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    data = {"name": "digits", "seed": 0, "subset_train": 120, "subset_test": 60}
    return {"data": data, "tau_data": data, "teacher_recipe": {"epochs": 1},
            "distill_recipe": {"epochs": 1}, "teacher_seed": 0, "size_tau": 1.8,
            "size_chains": [{"teacher": "resnet8", "assistant": "resnet8", "student": "resnet8"},
                            {"teacher": "resnet8", "assistant": None, "student": "resnet8"}],
            "seed_chains": [{"teacher": "resnet8", "assistant": "resnet8",
                             "student": "wrn_10_1"}],
            "tau_chains": [], "tau_values": [1.8], "seeds": [0], "n_boot": 10}


def test_run_chain_end_to_end_and_store(tiny_cfg, monkeypatch, tmp_path, one_thread):
    import kdlib.train

    calls = []
    real = kdlib.train.distill
    monkeypatch.setattr(kdlib.train, "distill",
                        lambda s, t, *a, **k: calls.append(type(s).__name__) or real(s, t, *a,
                                                                                       **k))
    df = ta.run(tiny_cfg, "smoke", progress=False)
    assert (tmp_path / "runs" / "smoke" / "teacher_assistant.sqlite").is_file()
    assert len(df) == 3
    # one assistant (resnet8 at tau 1.8, seed 0) shared by two chains: trained once, so 4
    # distillations (1 assistant + 3 students), not 5
    assert len(calls) == 4
    assert len(list((tmp_path / "data" / "assistants" / "assistants").glob("*.pt"))) == 1
    assert len(list((tmp_path / "data" / "assistants" / "students").glob("*.pt"))) == 3
    a = df[df.assistant_name == "resnet8"]
    assert a["assistant_ece_at_tau"].nunique() == 1  # the same assistant in both chains
    for col in ["teacher_accuracy", "assistant_ece_at_tau", "student_accuracy", "student_ece"]:
        assert df[col].between(0, 1).all(), col
    plain = df[df.assistant_name == "none"].iloc[0]
    # without an assistant the "assistant" is the teacher itself
    assert plain.assistant_ece_at_tau == pytest.approx(plain.teacher_ece_at_tau)
    # resnet8 with a 1-channel stem and 10 classes
    assert plain.assistant_params == plain.teacher_params == 77_754
    takd = df[(df.assistant_name == "resnet8") & (df.student == "resnet8")].iloc[0]
    assert takd.assistant_ece_at_tau != pytest.approx(takd.teacher_ece_at_tau)
    # a re-run reads the store and trains nothing
    import kdlib.train

    def boom(*a, **k):
        raise AssertionError("retrained")

    monkeypatch.setattr(kdlib.train, "distill", boom)
    again = ta.run(tiny_cfg, "smoke", progress=False)
    pd.testing.assert_frame_equal(df, again)


def test_plot_takd():
    from kdlib.plots.takd_eskd import plot_takd

    eces = {"A": [0.1, 0.2], "B": [0.3, 0.2], "none": [0.4, 0.4]}
    df = _frame(["A", "B", "none"], eces, eces, seeds=(0, 1), params={"A": 2000, "B": 1000})
    fig = plot_takd(df, 1.8)
    left, right = fig.axes[:2]
    assert sum(len(c.get_offsets()) for c in left.collections) == 4  # 2 assistants x 2 seeds
    assert len(left.lines) == 1  # plain KD line
    with pytest.raises(ValueError, match="no chains at tau"):
        plot_takd(df, 3.0)
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------ two assistants, data sets


def test_assistant_pair_differences_hand_values():
    # two assistants (as Table 7): larger A (2000 params), smaller B (1000), three seeds
    eces = {"A": [0.10, 0.12, 0.11], "B": [0.13, 0.12, 0.15]}
    accs = {"A": [0.71, 0.70, 0.72], "B": [0.70, 0.71, 0.70]}
    df = _frame("AB", eces, accs, params={"A": 2000, "B": 1000})
    d = ta.assistant_pair_differences(df, 1.8).set_index("metric")
    e = d.loc["assistant ECE at tau"]
    # per seed (points): -3, 0, -4 -> mean -7/3, sd of (-3, 0, -4)
    assert (e.larger, e.smaller, e.n) == ("A", "B", 3)
    assert e["diff"] == pytest.approx(-7 / 3)
    assert e["std"] == pytest.approx(np.std([-3, 0, -4], ddof=1))
    half = 4.302652729911275 * e["std"] / math.sqrt(3)  # t(0.975, 2)
    assert e["lo"] == pytest.approx(-7 / 3 - half) and e["hi"] == pytest.approx(-7 / 3 + half)
    a = d.loc["student accuracy"]
    assert a["diff"] == pytest.approx((1 - 1 + 2) / 3)  # +1, -1, +2 points
    # the claims: the two-assistant group gets a paired-difference calibration row
    t = ta.claims(df, 1.8, [], [1.8], n_boot=50)
    assert len(t) == 2
    assert t.loc[1, "claim"].startswith("larger assistant, lower ECE: A - B")
    assert t.loc[1, "ours"] == "-2.33 pp" and t.loc[1, "n"] == 3
    assert t.loc[1, "verdict"] == "inconclusive"  # interval [-7.3, 2.6] contains 0
    # six (assistant, seed) chains: the chain-level Spearman is computed (n = 6)
    assert t.loc[0, "n"] == 6 and t.loc[0, "ours"] != "nan%"


def test_split_tables_never_mixes_data_sets():
    cfg = presets.get(ta.NAME, "paper")
    rows = []
    for ds, chains, taus in (("cifar100", cfg["size_chains"][:1] + cfg["seed_chains"][:1],
                              [1.8]),
                             ("tinyimagenet", cfg["tau_chains"], [1.8, 4.0])):
        for c in chains:
            for tau in taus:
                rows.append({"dataset": ds, "teacher": c["teacher"],
                             "assistant_name": c["assistant"], "student": c["student"],
                             "tau": tau, "seed": 0})
    df = pd.DataFrame(rows)
    size, tau = ta.split_tables(df, cfg)
    assert set(size["dataset"]) == {"cifar100"} and len(size) == 2
    assert set(tau["dataset"]) == {"tinyimagenet"} and len(tau) == 4
    # the Tiny-ImageNet chains at tau 1.8 never enter the CIFAR-100 (Table 2) rows
    assert not (size["student"] == "wrn_16_1").any()


def test_report_headline_and_claims_without_plain_kd():
    # the paper preset has no plain-KD chain: the headline must not carry a NaN gain
    eces = {"A": [0.10, 0.12, 0.11], "B": [0.13, 0.12, 0.15], "C": [0.2, 0.21, 0.19]}
    accs = {"A": [0.71, 0.70, 0.72], "B": [0.70, 0.71, 0.70], "C": [0.6, 0.62, 0.61]}
    df = _frame("ABC", eces, accs, params={"A": 3000, "B": 2000, "C": 1000})
    cfg = {"data": {"name": "digits"}, "tau_data": {"name": "digits"}, "size_tau": 1.8,
           "size_chains": [{"teacher": "T", "assistant": a, "student": "S"} for a in "ABC"],
           "seed_chains": None, "tau_chains": None, "tau_values": [1.8, 4.0], "n_boot": 50}
    figs = ta.report_headline(df, cfg)
    assert figs["chains run"] == 9
    assert not any("gain" in k for k in figs)
    rho = figs["spearman(student acc, assistant ECE), T -> S, digits"]
    assert np.isfinite(rho.value) and -1 <= rho.value <= 0
    from kdlib.headline import headline_bundle

    headline_bundle(**figs)  # every figure finite and well formed
    t = ta.report_claims(df, cfg)
    assert len(t) == 2  # 3 assistants: chain Spearman + size Spearman; no tau chains
    assert t.loc[1, "claim"].startswith("larger assistant, lower ECE (T -> S")


def test_aligned_tables_match_the_paper_names():
    rows = []
    for s, (e, a) in enumerate([(0.095, 0.684), (0.097, 0.686)]):
        rows.append({"dataset": "cifar100", "teacher": "wrn_28_3", "assistant_name": "resnet110",
                     "student": "resnet14", "tau": 1.8, "seed": s,
                     "assistant_ece_at_tau": e, "student_accuracy": a})
    df = pd.DataFrame(rows)
    t2 = ta.aligned_table2(df, 1.8, "cifar100").set_index("metric")
    acc = t2.loc["student_accuracy"]
    assert (acc.teacher, acc.assistant, acc.student) == ("WRN-28-3", "ResNet110", "ResNet14")
    assert acc["paper (%)"] == pytest.approx(68.44)
    assert acc["ours mean (%)"] == pytest.approx(68.5) and acc["n seeds"] == 2
    assert acc["ours - paper (points)"] == pytest.approx(0.06)
    assert ta.aligned_table2(df, 1.8, "tinyimagenet").empty
    # Table 3: the blank assistant matched as WRN-28-2
    t3rows = [{"dataset": "tinyimagenet", "teacher": "wrn_28_3", "assistant_name": "wrn_28_2",
               "student": "wrn_28_1", "tau": tau, "seed": 0, "assistant_ece_at_tau": 0.2,
               "student_accuracy": 0.5} for tau in (1.8, 4.0)]
    chains = [{"teacher": "wrn_28_3", "assistant": "wrn_28_2", "student": "wrn_28_1"}]
    t3 = ta.aligned_table3(pd.DataFrame(t3rows), chains, "tinyimagenet")
    got = t3[t3.metric == "student_accuracy"].set_index("tau")["paper (%)"]
    assert got[1.8] == pytest.approx(56.45) and got[4.0] == pytest.approx(52.87)
    # Table 7 row by row (seed 5)
    t7rows = [{"dataset": "cifar100", "teacher": "wrn_28_4", "assistant_name": "wrn_28_1",
               "student": "resnet14", "tau": 1.8, "seed": 2, "assistant_ece_at_tau": 0.1,
               "student_accuracy": 0.69}]
    chains7 = [{"teacher": "wrn_28_4", "assistant": "wrn_28_1", "student": "resnet14"}]
    t7 = ta.aligned_table7(pd.DataFrame(t7rows), 1.8, "cifar100", chains7)
    r = t7[t7.metric == "student_accuracy"].iloc[0]
    assert r["seed"] == 2 and r["paper (%)"] == pytest.approx(68.83)


def test_plan_runs_counts_each_assistant_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    from tests.fake_datasets import write_cifar100, write_tinyimagenet

    write_cifar100(tmp_path / "data")
    write_tinyimagenet(tmp_path / "data")
    runs = ta.plan_runs(presets.get(ta.NAME, "paper"))
    roles = pd.Series([r.role for r in runs]).value_counts().to_dict()
    # 5 teachers (WRN-28-3 and ResNet110 on CIFAR-100 for Table 2, WRN-28-4 for Table 7,
    # WRN-16-3 and WRN-28-3 on Tiny-ImageNet for Table 3); 16 chains x 4 seeds = 64 students;
    # assistants: Table 2's WRN-28-2/1 serve both students (8 shared), Table 7's likewise
    assert roles == {"teacher": 5, "assistant": 48, "student": 64}
    assert len({r.key for r in runs}) == len(runs)
    assert not (tmp_path / "data" / "assistants").exists()  # planning writes nothing
