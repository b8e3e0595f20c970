import math

import numpy as np
import pandas as pd
import pytest
import torch

from kdlib import feature_metrics as fm
from kdlib import presets
from kdlib.experiments import tsne_features as tf
from kdlib.recipe import Recipe, recipe_from_spec

# Five points on a line, two classes:  a0=0  a1=1  b2=3  a3=4  b4=10
LINE_X = np.array([[0.0], [1.0], [3.0], [4.0], [10.0]])
LINE_Y = np.array([0, 0, 1, 0, 1])


# ------------------------------------------------------------------ neighbours and metrics


def test_nearest_neighbours_by_hand():
    nb = fm.nearest_neighbours(LINE_X, k=2)
    # 0: d(1)=1, d(3)=3, d(4)=4 ... -> 1, 2;   1: d(0)=1, d(2)=2 -> 0, 2
    # 2: d(3)=1, d(1)=2 -> 3, 1;               3: d(2)=1, d(1)=3 -> 2, 1
    # 4: d(3)=6, d(2)=7 -> 3, 2
    np.testing.assert_array_equal(nb, [[1, 2], [0, 2], [3, 1], [2, 1], [3, 2]])


def test_nearest_neighbours_ties_by_index_and_duplicates():
    x = np.array([[0.0], [1.0], [-1.0], [0.0]])
    nb = fm.nearest_neighbours(x, k=3)
    # point 0: its duplicate 3 at 0, then 1 and 2 both at distance 1 (index order)
    np.testing.assert_array_equal(nb[0], [3, 1, 2])
    np.testing.assert_array_equal(nb[3], [0, 1, 2])
    # chunking does not change the answer
    x = np.random.default_rng(0).normal(size=(37, 3))
    np.testing.assert_array_equal(fm.nearest_neighbours(x, 4, chunk=5),
                                  fm.nearest_neighbours(x, 4, chunk=1000))


def test_knn_accuracy_and_confused_by_hand():
    # k=3 neighbours (by distance): 0: 1,2,3 -> labels 0,1,0 -> vote 0 (right), same=2
    # 1: 0,2,3 -> 0,1,0 -> 0 (right), same 2;   2: 3,1,0 -> 0,0,0 -> 0 (wrong), same 0
    # 3: 2,1,0 -> 1,0,0 -> 0 (right), same 2;   4: 3,2,1 -> 0,1,0 -> 0 (wrong), same 1
    assert fm.knn_accuracy(LINE_X, LINE_Y, k=3) == pytest.approx(3 / 5)
    assert fm.confused_points(LINE_X, LINE_Y, k=3) == 2   # points 2 and 4 (same < 1.5)
    # k=1: 0->1 (0 ok), 1->0 ok, 2->3 (0, wrong), 3->2 (1, wrong), 4->3 (0, wrong)
    assert fm.knn_accuracy(LINE_X, LINE_Y, k=1) == pytest.approx(2 / 5)
    assert fm.confused_points(LINE_X, LINE_Y, k=1) == 3


def test_knn_vote_tie_goes_to_nearest_class():
    # k=2 for point 0: neighbours 1 (class 1, d=1) then 2 (class 2, d=2): a 1-1 tie -> class 1
    x = np.array([[0.0], [1.0], [-2.0], [10.0], [11.0], [-12.0]])
    y = np.array([1, 1, 2, 1, 1, 2])
    # point 2: 0 (class 1, d=2), 1 (class 1, d=3) -> 1; point 5: 2 (class 2, d=10),
    # 0 (class 1, d=12) -> tie -> 2
    assert (fm._vote(y[fm.nearest_neighbours(x, 2)]) == [1, 1, 1, 1, 1, 2]).all()


def test_silhouette_by_hand():
    x = np.array([[0.0], [1.0], [5.0], [7.0]])
    y = np.array([0, 0, 1, 1])
    # s(0): a=1, b=(5+7)/2=6 -> 5/6; s(1): a=1, b=(4+6)/2=5 -> 4/5
    # s(2): a=2, b=(5+4)/2=4.5 -> 2.5/4.5; s(3): a=2, b=(7+6)/2=6.5 -> 4.5/6.5
    expected = np.mean([5 / 6, 4 / 5, 2.5 / 4.5, 4.5 / 6.5])
    assert fm.silhouette(x, y) == pytest.approx(expected)


def test_separation_ratio_by_hand():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 2.0]])
    y = np.array([0, 0, 1, 1])
    # centroids (1, 0) and (10, 1): distance sqrt(82); every point is 1 from its centroid
    assert fm.separation_ratio(x, y) == pytest.approx(math.sqrt(82))
    # scale-free
    assert fm.separation_ratio(7 * x, y) == pytest.approx(math.sqrt(82))
    # three classes: mean of the three centroid distances
    x3 = np.array([[0.0], [2.0], [10.0], [12.0], [30.0], [32.0]])
    y3 = np.array([0, 0, 1, 1, 2, 2])
    assert fm.separation_ratio(x3, y3) == pytest.approx((10 + 30 + 20) / 3)


def test_feature_metrics_bundle_matches_single_functions():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 4)), rng.normal(3, 1, (20, 4))])
    y = np.repeat([0, 1], 20)
    m = fm.feature_metrics(torch.from_numpy(x).float(), torch.from_numpy(y), k=5)
    x32 = x.astype(np.float32).astype(np.float64)
    assert m["knn_accuracy"] == pytest.approx(fm.knn_accuracy(x32, y, 5))
    assert m["n_confused"] == fm.confused_points(x32, y, 5)
    assert m["confused_fraction"] == pytest.approx(m["n_confused"] / 40)
    assert m["silhouette"] == pytest.approx(fm.silhouette(x32, y), rel=1e-6)
    assert m["separation_ratio"] == pytest.approx(fm.separation_ratio(x32, y), rel=1e-6)
    assert m["n"] == 40
    # well separated: perfect neighbours
    far = np.concatenate([x[:20], x[20:] + 100])
    m = fm.feature_metrics(far, y, k=5)
    assert m["knn_accuracy"] == 1.0 and m["n_confused"] == 0 and m["silhouette"] > 0.9


@pytest.mark.parametrize("call, err, match", [
    (lambda: fm.knn_accuracy(np.zeros(5), np.zeros(5, int)), ValueError, "N x D"),
    (lambda: fm.knn_accuracy(LINE_X, LINE_Y[:4]), ValueError, "4 entries"),
    (lambda: fm.knn_accuracy(LINE_X, LINE_Y.astype(float)), TypeError, "integer"),
    (lambda: fm.knn_accuracy(LINE_X, -LINE_Y - 1), ValueError, ">= 0"),
    (lambda: fm.knn_accuracy(LINE_X, LINE_Y, k=5), ValueError, "k must be <= 4"),
    (lambda: fm.knn_accuracy(LINE_X, LINE_Y, k=0), ValueError, "k must be >= 1"),
    (lambda: fm.knn_accuracy(LINE_X * np.nan, LINE_Y), ValueError, "finite"),
    (lambda: fm.confused_points(LINE_X, LINE_Y, k=2.5), TypeError, "integer"),
    (lambda: fm.silhouette(LINE_X, np.zeros(5, int)), ValueError, "between 2 and N - 1"),
    (lambda: fm.separation_ratio(LINE_X, np.zeros(5, int)), ValueError, ">= 2 classes"),
    (lambda: fm.nearest_neighbours("x"), TypeError, "numpy array or torch tensor"),
])
def test_metric_validation(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ------------------------------------------------------------------ picking temperatures


def test_pick_temperatures():
    curve = pd.DataFrame({"temperature": [4.0, 1.0, 1.5, 8.0],
                          "ece": [0.30, 0.12, 0.02, 0.60]})
    assert tf.pick_temperatures(curve) == {"calibrated": 1.5, "miscalibrated": 8.0}
    tie = pd.DataFrame({"temperature": [2.0, 1.0, 3.0], "ece": [0.1, 0.1, 0.5]})
    assert tf.pick_temperatures(tie)["calibrated"] == 1.0
    with pytest.raises(ValueError, match="same at every temperature"):
        tf.pick_temperatures(pd.DataFrame({"temperature": [1.0, 2.0], "ece": [0.1, 0.1]}))
    with pytest.raises(ValueError, match="lacks columns"):
        tf.pick_temperatures(pd.DataFrame({"temperature": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="at least 2"):
        tf.pick_temperatures(pd.DataFrame({"temperature": [1.0], "ece": [0.1]}))


# ------------------------------------------------------------------ tables


def _fake_df():
    rows = []
    for seed, (acc_c, acc_m) in enumerate([(0.90, 0.80), (0.92, 0.86)]):
        for role, t, acc in (("calibrated", 1.0, acc_c), ("miscalibrated", 8.0, acc_m)):
            rows.append({"seed": seed, "role": role, "temperature": t,
                         "teacher_ece_at_tau": 0.01 if t == 1.0 else 0.6, "accuracy": acc,
                         "ece": 0.05, "knn_accuracy": acc, "silhouette": 0.3 + seed / 10,
                         "n_confused": 10 * (seed + 1) + (5 if t == 8.0 else 0),
                         "confused_fraction": 0.1, "separation_ratio": 2.0})
    return pd.DataFrame(rows)


def test_summary_table_and_paired_differences():
    s = tf.summary_table(_fake_df())
    assert list(s.index) == ["calibrated", "miscalibrated"]
    assert s.loc["calibrated", "accuracy_mean"] == pytest.approx(91.0)
    assert s.loc["calibrated", "accuracy_std"] == pytest.approx(np.std([90, 92], ddof=1))
    assert s.loc["miscalibrated", "teacher_ece_at_tau_mean"] == pytest.approx(60.0)
    assert s.loc["miscalibrated", "n_confused_mean"] == pytest.approx(20.0)
    assert s.loc["calibrated", "silhouette_mean"] == pytest.approx(0.35)
    assert s.loc["calibrated", "n_seeds"] == 2
    d = tf.paired_differences(_fake_df())
    assert d.loc[0, "accuracy"] == pytest.approx(-0.10)
    assert d.loc[1, "accuracy"] == pytest.approx(-0.06)
    assert d.loc["mean", "accuracy"] == pytest.approx(-0.08)
    assert d.loc["mean", "n_confused"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="lacks columns"):
        tf.summary_table(_fake_df().drop(columns="silhouette"))


# ------------------------------------------------------------------ presets, grid, end to end


def test_presets_are_valid():
    for scale in presets.SCALES:
        cfg = presets.get(tf.NAME, scale)
        tf._check_cfg(cfg)
        cells = tf.grid(cfg, {"calibrated": 1.0, "miscalibrated": 8.0})
        assert len(cells) == len(cfg["seeds"])
        assert sum(c["embed"] for c in cells) == len(cfg["embed_seeds"])
        recipe_from_spec(cfg["teacher_recipe"])
        recipe_from_spec(cfg["student_recipe"])
    paper = presets.get(tf.NAME, "paper")
    assert paper["data"]["name"] == "cifar10" and paper["teacher"] == "wrn_28_3"
    assert paper["student"] == "resnet14"
    assert recipe_from_spec(paper["teacher_recipe"]) == Recipe.preset("paper")


def test_grid_validation():
    cfg = presets.get(tf.NAME, "smoke")
    with pytest.raises(ValueError, match="keys"):
        tf.grid(cfg, {"calibrated": 1.0})
    # embed seeds outside the (selected) seeds: the first seed is embedded instead
    cells = tf.grid({**cfg, "seeds": [3, 4], "embed_seeds": [0]},
                    {"calibrated": 1.0, "miscalibrated": 8.0})
    assert [c["embed"] for c in cells] == [True, False]
    sel = presets.get(tf.NAME, "paper", select="seed=2")
    assert tf.embed_seeds(sel) == [2] and tf.embed_seeds(presets.get(tf.NAME, "paper")) == [0]
    with pytest.raises(ValueError, match="lacks"):
        tf.grid({"data": {}}, {"calibrated": 1.0, "miscalibrated": 8.0})


def test_penultimate_features_eval_mode_and_order(tmp_path, monkeypatch):
    from kdlib.experiments.common import load_data
    from kdlib.train import make_model

    d = load_data({"name": "digits", "seed": 0, "subset_train": 60, "subset_test": 50})
    model = make_model("resnet8", d, seed=0).train()
    feats, labels = fm.penultimate_features(model, d, batch_size=16)
    assert model.training  # mode restored
    assert feats.shape == (50, model.feature_dim) and feats.dtype == torch.float32
    assert torch.equal(labels, d.test_y)
    # same as one eval-mode forward on the normalized test set
    from kdlib.batches import DeviceData

    x = next(iter(DeviceData(d).test_batches(50))).x
    with torch.no_grad():
        ref = model.eval()(x, return_features=True)[1]
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)


def test_end_to_end_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    cfg = presets.get(tf.NAME, "smoke")
    cfg["data"] = {"name": "digits", "seed": 0, "subset_train": 80, "subset_test": 60}
    cfg["teacher_recipe"] = {"epochs": 1}
    curve = tf.teacher_curve(cfg)
    assert list(curve["temperature"]) == [1.0, 8.0]
    assert 0 <= curve.attrs["accuracy"] <= 1 and curve.attrs["features"]["n"] == 60
    taus = tf.pick_temperatures(curve)
    assert set(taus.values()) == {1.0, 8.0}
    df, emb, records = tf.run(cfg, "smoke", taus, progress=False)
    assert [r["seed"] for r in records] == [0] and len(records[0]["students"]) == 2
    # both students are in the student store, with weights and test logits
    stored = sorted((tmp_path / "runs" / "smoke" / "students").glob("*.pt"))
    assert len(stored) == 2
    assert sorted(df["role"]) == ["calibrated", "miscalibrated"]
    assert set(df.columns) >= {"seed", "temperature", "teacher_ece_at_tau", *tf.METRICS}
    assert ((df["knn_accuracy"] >= 0) & (df["knn_accuracy"] <= 1)).all()
    assert emb[0]["calibrated"].shape == (60, 2)
    n_conf = df.set_index("role").loc["calibrated", "n_confused"]
    assert emb[0]["calibrated_confused"].sum() == n_conf
    np.testing.assert_array_equal(emb[0]["labels"], cfg_labels(cfg))
    # the second run reads the store instead of training
    df2, _, _ = tf.run(cfg, "smoke", taus, progress=False)
    pd.testing.assert_frame_equal(df, df2)
    assert (tmp_path / "runs" / "smoke" / "tsne_features.sqlite").exists()
    # a fresh sweep store re-measures from the kept students (no training): same numbers
    (tmp_path / "runs" / "smoke" / "tsne_features.sqlite").unlink()
    import kdlib.stacked

    monkeypatch.setattr(kdlib.stacked, "distill_stacked",
                        lambda *a, **k: pytest.fail("a kept student was retrained"))
    df3, _, _ = tf.run(cfg, "smoke", taus, progress=False)
    pd.testing.assert_frame_equal(df, df3)


def cfg_labels(cfg):
    from kdlib.experiments.common import load_data

    return load_data(cfg["data"]).test_y.numpy()


def test_confused_mask_by_hand():
    # k=3 (see test_knn_accuracy_and_confused_by_hand): points 2 and 4 are confused
    np.testing.assert_array_equal(fm.confused_mask(LINE_X, LINE_Y, k=3),
                                  [False, False, True, False, True])


def test_paper_extremes_from_table6():
    p = tf.paper_extremes().set_index("teacher")
    r = p.loc["ResNet56"]
    assert r["calibrated_tau"] == 1.5 and r["calibrated_teacher_ece"] == pytest.approx(1.79)
    assert r["calibrated_kd_accuracy"] == pytest.approx(68.28)
    assert r["miscalibrated_tau"] == 8.0 and r["miscalibrated_kd_accuracy"] == pytest.approx(66.8)
    assert p.loc["WRN-28-1", "calibrated_tau"] == 1.5
    assert len(p) == 3


def test_tsne_panels_figure():
    import matplotlib

    matplotlib.use("Agg")
    from kdlib.plots.features import teacher_ece_curve, tsne_panels

    xy = np.random.default_rng(0).normal(size=(12, 2))
    lab = np.arange(12) % 3
    fig = tsne_panels({"a": (xy, lab), "b": (xy, lab, lab == 0)}, class_names=["x", "y", "z"])
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["x", "y", "z"]
    # ring layer on panel b only: 3 class layers + 1 ring layer
    assert len(fig.axes[0].collections) == 3 and len(fig.axes[1].collections) == 4
    with pytest.raises(ValueError, match="N x 2"):
        tsne_panels({"a": (xy[:, :1], lab)})
    with pytest.raises(ValueError, match="one label per point"):
        tsne_panels({"a": (xy, lab[:5])})
    with pytest.raises(ValueError, match="class_names"):
        tsne_panels({"a": (xy, lab)}, class_names=["x"])
    curve = pd.DataFrame({"temperature": [1.0, 2.0], "ece": [0.1, 0.3]})
    fig = teacher_ece_curve(curve, {"calibrated": 1.0})
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="not a temperature"):
        teacher_ece_curve(curve, {"calibrated": 3.0})
    import matplotlib.pyplot as plt

    plt.close("all")


def test_claims_verdicts_from_paired_seeds():
    rows = []
    for seed in range(4):
        for role, acc, sil in (("calibrated", 0.90 + seed / 100, 0.50 + seed / 50),
                               ("miscalibrated", 0.88 + seed / 100, 0.60 + seed / 50)):
            rows.append({"seed": seed, "role": role, "accuracy": acc, "ece": 0.05,
                         "knn_accuracy": 0.9 + (seed % 2) / 100, "silhouette": sil,
                         "n_confused": 3, "confused_fraction": 0.01,
                         "separation_ratio": 3.0 + (role == "miscalibrated") * (1 + seed / 10)})
    t = tf.claims(pd.DataFrame(rows)).set_index("claim")
    v = t["verdict"].tolist()
    # separation higher by 1.0-1.3, silhouette by exactly 0.1, accuracy lower by 2 points
    # in every seed; 5-NN accuracy identical (difference 0: interval [0, 0] touches the null)
    assert v == ["holds", "holds", "holds", "inconclusive"]
    assert t["ours"].iloc[2] == "-2.00 pp"
    assert t["n"].tolist() == [4, 4, 4, 4]
    assert t["interval"].iloc[1] == (pytest.approx(0.1), pytest.approx(0.1))
    # two seeds: n < 3, every claim inconclusive
    two = tf.claims(pd.DataFrame([r for r in rows if r["seed"] < 2]))
    assert set(two["verdict"]) == {"inconclusive"}
    with pytest.raises(TypeError, match="DataFrame"):
        tf.claims([1, 2])


# ------------------------------------------------------------ contract: skip, dry run, figures


def test_skipped_tables_and_dry_run_cut(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    paper = presets.get(tf.NAME, "paper")
    # no CIFAR-10 in an empty data folder: Figure 5 is skipped, naming the file to fetch
    (table, reason), = tf.skipped_tables(paper)
    assert table == "Figure 5" and "cifar" in reason.lower()
    assert tf.skipped_tables(presets.get(tf.NAME, "smoke")) == []   # digits ship with sklearn
    dry = presets.get(tf.NAME, "paper", dry_run=True)
    assert dry["dry_run"] is True and dry["seeds"] == [0] and dry["embed_seeds"] == [0]
    assert dry["torch_threads"] == 1 and paper["torch_threads"] is None
    for key in ("teacher_recipe", "student_recipe"):   # "paper" spelled out, then cut
        r = recipe_from_spec(dry[key])
        assert (r.epochs, r.batch_size, r.milestones) == (1, 8, ())
    assert dry["data"]["subset_test"] == 32 and dry["temperatures"] == paper["temperatures"]
    assert presets.tables(tf.NAME) == {"figure5": ["temperatures", "seeds", "embed_seeds"]}
    cells = tf.grid(dry, {"calibrated": 1.0, "miscalibrated": 8.0}, "paper")
    assert cells[0]["store"] == "paper-dry-run"


def test_headline_figures_by_hand():
    f = tf.headline_figures(_fake_df())
    # knn accuracy means: calibrated (0.90 + 0.92) / 2, miscalibrated (0.80 + 0.86) / 2
    assert f["5-NN accuracy, calibrated teacher's students"].text() == "91.00%"
    assert f["5-NN accuracy, miscalibrated teacher's students"].text() == "83.00%"
    # paired differences -0.10, -0.06: mean -0.08, t(1) half-width 12.706 * 0.02828 / 1.414
    d = f["5-NN accuracy, miscalibrated - calibrated"]
    half = 12.7062047 * np.std([-0.10, -0.06], ddof=1) / np.sqrt(2)
    assert d.value == pytest.approx(-0.08)
    assert (d.low, d.high) == (pytest.approx(-0.08 - half), pytest.approx(-0.08 + half))
    assert d.text().startswith("-8.00 points")


def test_panels_and_paper_beside_ours():
    df = _fake_df()
    n = 4
    emb = {0: {"labels": np.arange(n) % 2, "calibrated": np.zeros((n, 2)),
               "miscalibrated": np.ones((n, 2)), "calibrated_confused": np.zeros(n, bool),
               "miscalibrated_confused": np.ones(n, bool)}}
    p = tf.panels(df, emb, 0)
    titles = list(p)
    assert titles[0].startswith("calibrated: tau = 1, teacher ECE 1.0%")
    assert "acc 90.0%, 5-NN 90.0%, confused 10" in titles[0]
    assert p[titles[1]][2].all()
    with pytest.raises(ValueError, match="not embedded"):
        tf.panels(df, emb, 1)
    b = tf.paper_beside_ours(tf.summary_table(df), "wrn_28_3", "resnet14")
    ours = b.iloc[-1]
    assert ours["teacher"] == "WRN-28-3 (ours)" and ours["student"] == "ResNet14"
    assert ours["calibrated_kd_accuracy"] == pytest.approx(91.0)
    assert ours["miscalibrated_teacher_ece"] == pytest.approx(60.0)
    assert len(b) == 4 and not any(c.endswith("dist_accuracy") for c in b)
