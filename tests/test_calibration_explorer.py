import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlib import calibration, presets
from kdlib.experiments import calibration_explorer as ce
from kdlib.models import build_model
from kdlib.recipe import Recipe

# Four samples, two classes: confidences 0.6, 0.7, 0.8, 0.9 (class 0 predicted everywhere).
PROBS4 = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]], dtype=torch.float64)


def random_logits(n=300, c=5, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, c, generator=g)
    y = torch.where(torch.rand(n, generator=g) < 0.7, z.argmax(1), torch.randint(0, c, (n,),
                                                                                 generator=g))
    return z, y


# ----------------------------------------------------------------- presets


def test_presets_cover_all_scales_with_buildable_teachers():
    for scale in presets.SCALES:
        cfg = presets.get(ce.NAME, scale)
        names = [t["name"] for t in cfg["teachers"]]
        assert len(names) == len(set(names)) >= 2
        assert cfg["headline_teacher"] in names
        lo, hi = cfg["temperature_range"]
        assert 0 < lo < 1 < hi
        for t in cfg["teachers"]:
            assert isinstance(ce.make_recipe(t["recipe"], t["arch"]), Recipe)
        assert len(ce.grid(cfg)) == len(names)
    smoke, default, paper = (presets.get(ce.NAME, s) for s in presets.SCALES)
    assert smoke["data"]["name"] == default["data"]["name"] == "digits"
    assert max(ce.make_recipe(t["recipe"]).epochs for t in smoke["teachers"]) <= 2
    assert paper["data"]["name"] == "cifar100"
    assert [t["arch"] for t in paper["teachers"]] == ["resnet56", "resnet110", "wrn_28_1"]
    assert all(ce.make_recipe(t["recipe"]) == Recipe.preset("paper") for t in paper["teachers"])


def test_teacher_data_keeps_the_test_split():
    cfg = {"data": {"name": "digits", "seed": 0, "subset_test": 100}}
    assert ce.teacher_data(cfg, {"name": "a"}) == cfg["data"]
    assert ce.teacher_data(cfg, {"name": "a", "subset_train": 250}) == {
        "name": "digits", "seed": 0, "subset_test": 100, "subset_train": 250}
    assert "subset_train" not in cfg["data"]  # not modified in place
    with pytest.raises(ValueError, match="subset_train"):
        ce.teacher_data(cfg, {"name": "a", "subset_train": 0})
    default = presets.get(ce.NAME, "default")
    cells = ce.grid(default)
    assert [c["data"].get("subset_train") for c in cells] == [None, None, 250]
    assert all(c["data"]["name"] == "digits" and "subset_test" not in c["data"] for c in cells)


def test_make_recipe_forms():
    assert ce.make_recipe("default") == Recipe.preset("default")
    r = ce.make_recipe({"preset": "default", "epochs": 2, "milestones": []})
    assert (r.epochs, r.milestones, r.lr) == (2, (), 0.05)
    r = ce.make_recipe({"epochs": 5, "lr": 0.1, "milestones": [3]})
    assert (r.epochs, r.lr, r.milestones, r.batch_size) == (5, 0.1, (3,), 64)
    assert ce.make_recipe("paper", arch="mobilenetv2").lr == 0.01
    with pytest.raises(TypeError, match="preset name or a dict"):
        ce.make_recipe(3)
    with pytest.raises(ValueError, match="milestones"):
        ce.make_recipe({"preset": "default", "epochs": 5})  # default milestones exceed 5


def test_temperature_grid():
    g = ce.temperature_grid(0.25, 10.0, 5)
    assert g.shape == (6,) and np.all(np.diff(g) > 0)
    assert g[0] == pytest.approx(0.25) and g[-1] == pytest.approx(10.0)
    assert 1.0 in g
    np.testing.assert_allclose(np.delete(g, np.flatnonzero(g == 1.0)),
                               0.25 * 40.0 ** (np.arange(5) / 4))
    assert ce.temperature_grid(2.0, 4.0, 3).tolist() == pytest.approx([2.0, 2 * 2**0.5, 4.0])
    with pytest.raises(ValueError, match="t_min must be < t_max"):
        ce.temperature_grid(2.0, 1.0)
    with pytest.raises(ValueError):
        ce.temperature_grid(0.0, 1.0)
    with pytest.raises(ValueError):
        ce.temperature_grid(0.5, 1.0, 1)


# ----------------------------------------------------------------- binning
# (the binning tests are in test_calibration.py, where the bins live)


def test_binning_reexports_are_calibrations():
    assert ce.binned_calibration is calibration.binned_calibration
    assert ce.BinnedCalibration is calibration.BinnedCalibration
    assert ce.BINNINGS == calibration.BINNINGS == ("equal_width", "equal_mass")


# ----------------------------------------------------------------- metrics


def test_metrics_at_temperature_closed_form():
    # logits (log 3, 0) at T = 1: p = (3/4, 1/4); at T = 2: p = (sqrt3, 1)/(sqrt3 + 1)
    z = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([0, 1])
    m = ce.metrics_at_temperature(z, y, 1.0, n_bins=4)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["nll"] == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2, rel=1e-6)
    assert m["brier"] == pytest.approx((2 * 0.25**2 + 2 * 0.75**2) / 2, rel=1e-6)
    assert m["ece"] == pytest.approx(0.25, rel=1e-6) and m["mce"] == pytest.approx(0.25, rel=1e-6)
    p0 = math.sqrt(3) / (math.sqrt(3) + 1)
    m2 = ce.metrics_at_temperature(z, y, 2.0, n_bins=4)
    assert m2["accuracy"] == pytest.approx(0.5)
    assert m2["ece"] == pytest.approx(p0 - 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        ce.metrics_at_temperature(z, y, 0.0)


def test_ece_curves_match_pointwise_metrics():
    z, y = random_logits()
    temps = [0.5, 1.0, 3.0]
    for binning, metric in (("equal_width", calibration.ece),
                            ("equal_mass", calibration.adaptive_ece)):
        curve = ce.ece_curve(z, y, temps, 10, binning)
        expected = [metric(calibration.tempered_softmax(z, t), y, 10) for t in temps]
        np.testing.assert_allclose(curve, expected, atol=1e-12)
        pointwise = [ce.metrics_at_temperature(z, y, t, 10, binning)["ece"] for t in temps]
        np.testing.assert_allclose(curve, pointwise, atol=1e-9)
    with pytest.raises(ValueError, match="empty"):
        ce.adaptive_ece_vs_temperature(z, y, [])


def test_cross_fitted_ece():
    # constant logits: T cannot matter (fit gives 1.0); every sample has confidence 1/2 and
    # is right, so each held-out half has ECE 1/2.
    z = torch.zeros(10, 2)
    y = torch.zeros(10, dtype=torch.int64)
    out = ce.cross_fitted_ece(z, y, n_bins=4)
    assert out["ece"] == pytest.approx(0.5) and out["temperatures"] == [1.0, 1.0]
    # the two halves of a seeded permutation, T from one half, ECE on the other
    z, y = random_logits(n=101, seed=3)
    out = ce.cross_fitted_ece(z, y, n_bins=10, seed=5)
    perm = torch.randperm(101, generator=torch.Generator().manual_seed(5))
    a, b = perm[:50], perm[50:]
    ta, tb = calibration.fit_temperature(z[a], y[a]), calibration.fit_temperature(z[b], y[b])
    expected = (51 * calibration.ece(calibration.tempered_softmax(z[b], ta), y[b], 10)
                + 50 * calibration.ece(calibration.tempered_softmax(z[a], tb), y[a], 10)) / 101
    assert out["temperatures"] == pytest.approx([ta, tb])
    assert out["ece"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 2"):
        ce.cross_fitted_ece(z[:1], y[:1])


def test_calibration_summary():
    z, y = random_logits(seed=1, scale=6.0)  # over-confident: fitted T > 1
    temps = ce.temperature_grid(0.25, 10.0, 21)
    s = ce.calibration_summary(z, y, temps, n_bins=15)
    p1 = torch.softmax(z, 1)
    assert s["accuracy"] == pytest.approx(float((z.argmax(1) == y).float().mean()))
    assert s["ece_t1"] == pytest.approx(calibration.ece(p1, y, 15))
    assert s["nll_t1"] == pytest.approx(calibration.nll(p1, y), rel=1e-6)
    assert s["fitted_t"] == pytest.approx(calibration.fit_temperature(z, y))
    assert s["fitted_t"] > 1.0
    assert s["nll_fit"] <= min(s["nll_curve"]) + 1e-9  # the NLL minimum over all T
    assert s["ece_min"] == pytest.approx(min(s["ece_curve"]))
    assert s["ece_min"] <= s["ece_t1"]  # 1.0 is on the grid
    assert s["ece_min_t"] == pytest.approx(temps[int(np.argmin(s["ece_curve"]))])
    assert len(s["ece_curve"]) == len(s["nll_curve"]) == len(temps) == len(s["temperatures"])
    assert s["n_test"] == 300
    import json
    json.dumps(s)  # plain values only (goes into a sweep store)


# ----------------------------------------------------------------- tables


def test_tables_and_headline():
    import pandas as pd

    z, y = random_logits(seed=2)
    logits = {"a": (z, y), "b": (2 * z, y)}
    t = ce.metrics_table(logits, {"b": 2.0}, n_bins=15, digits=12)
    assert t.loc["a", "T"] == 1.0 and t.loc["b", "T"] == 2.0
    assert t.loc["a", "ECE %"] == pytest.approx(100 * calibration.ece(torch.softmax(z, 1), y))
    assert t.loc["b", "ECE %"] == pytest.approx(t.loc["a", "ECE %"])  # 2z at T=2 is z at T=1
    cmp = ce.paper_ece_comparison(logits, 15, digits=6)
    assert cmp.loc[1.0, "paper ResNet56"] == 12.04 and cmp.loc[8.0, "paper ResNet56"] == 61.65
    assert cmp.loc[1.5, "paper ResNet110"] == 4.7
    assert list(cmp.columns) == ["paper ResNet56", "paper ResNet110", "paper WRN-28-1", "a", "b"]
    assert cmp.loc[4.0, "a"] == pytest.approx(
        100 * calibration.ece(calibration.tempered_softmax(z, 4.0), y), abs=1e-6)
    frame = pd.DataFrame([{"name": "a", "accuracy": 0.9, "ece_t1": 0.05, "fitted_t": 1.5,
                           "ece_fit": 0.01, "nll_t1": 0.3}])
    figs = {k: v.text() for k, v in ce.headline_figures(frame, "a").items()}
    assert figs == {"teacher accuracy": "90.00%", "ECE at tau=1": "5.00%", "fitted T": "1.50",
                    "ECE at fitted T": "1.00%"}
    with pytest.raises(ValueError, match="no teacher"):
        ce.headline_figures(frame, "z")
    table = ce.summary_table(frame)
    assert table.loc["a", "acc %"] == 90.0 and table.loc["a", "ECE@1 %"] == 5.0
    assert table.loc["a", "fitted T"] == 1.5 and table.loc["a", "NLL@1"] == 0.3


# ----------------------------------------------------------------- claims and the paper


def test_ece_difference_hand_computed():
    # 4 samples, 2 classes, logits log(p): confidences .6 .7 .8 .9 at T = 1, all class 0;
    # labels 1 1 0 0. Equal-width M = 2: all in (.5, 1]: acc .5, conf .75 -> ECE .25.
    p = PROBS4
    z, y = torch.log(p), torch.tensor([1, 1, 0, 0])
    same = ce.ece_difference(z, y, 1.0, 1.0, n_bins=2, n_boot=50)
    assert same["estimate"] == 0 and same["low"] == 0 and same["high"] == 0
    assert same["ece_from"] == pytest.approx(0.25) and same["n"] == 4
    # T = 1e3: every row ~(.5, .5): confidence 0.5 + O(1e-4) in bin 2, acc .5 -> ECE ~ 0
    d = ce.ece_difference(z, y, 1.0, 1e3, n_bins=2, n_boot=200, seed=3)
    ece_hot = calibration.ece(calibration.tempered_softmax(z, 1e3), y, 2)
    assert d["estimate"] == pytest.approx(ece_hot - 0.25, abs=1e-12)
    assert d["estimate"] == pytest.approx(-0.25, abs=1e-3)
    assert d["low"] <= d["estimate"] <= d["high"]
    again = ce.ece_difference(z, y, 1.0, 1e3, n_bins=2, n_boot=200, seed=3)
    assert again == d  # seeded


def test_ece_difference_identical_samples_have_no_spread():
    # every test sample the same: each resample is the sample itself
    z = torch.tensor([[2.0, 0.0, 0.0]] * 30)
    y = torch.zeros(30, dtype=torch.long)
    d = ce.ece_difference(z, y, 1.0, 8.0, n_bins=15, n_boot=100)
    c1 = float(torch.softmax(z[0], 0).max())
    c8 = float(torch.softmax(z[0] / 8, 0).max())
    assert d["estimate"] == pytest.approx((1 - c8) - (1 - c1), abs=1e-9)
    assert d["low"] == pytest.approx(d["estimate"]) and d["high"] == pytest.approx(d["estimate"])


def test_ece_difference_validates():
    z, y = torch.log(PROBS4), torch.tensor([1, 1, 0, 0])
    with pytest.raises(ValueError, match="t_to"):
        ce.ece_difference(z, y, 1.0, 0.0)
    with pytest.raises(ValueError, match="n_boot"):
        ce.ece_difference(z, y, 1.0, 2.0, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        ce.ece_difference(z, y, 1.0, 2.0, level=1.5)
    with pytest.raises(ValueError, match="labels"):
        ce.ece_difference(z, torch.tensor([0, 0, 0, 5]), 1.0, 2.0)


def test_claims_verdicts_hand_computed():
    # logits 6 * one-hot(pred), 10 classes: every sample has the same confidence at each T,
    # c(T) = e^(6/T) / (e^(6/T) + 9), so each ECE is |accuracy - c(T)| (one bin):
    # c(1) = .978, c(1.5) = .858, c(8) = .190.
    # "sharp": pred = label w.p. .7 else uniform (accuracy ~.73): ECE .25 -> .13 -> .54:
    #   both claims hold. "chance": pred uniform (accuracy ~.1): ECE .88 -> .76 -> .09:
    #   softening helps, but ECE at tau 8 is below ECE at 1: the second does not hold.
    g = torch.Generator().manual_seed(0)
    n, c = 2000, 10
    y = torch.randint(0, c, (n,), generator=g)
    sharp = torch.where(torch.rand(n, generator=g) < 0.7, y, torch.randint(0, c, (n,),
                                                                           generator=g))
    chance = torch.randint(0, c, (n,), generator=g)
    logits = {name: (6.0 * torch.nn.functional.one_hot(pred, c).float(), y)
              for name, pred in (("sharp", sharp), ("chance", chance))}
    table = ce.claims(logits, n_bins=15, n_boot=200)
    assert list(table["verdict"]) == ["holds", "holds", "holds", "does not hold"]
    assert table["n"].tolist() == [n] * 4

    def conf(t):
        return math.exp(6 / t) / (math.exp(6 / t) + 9)

    for i, pred in enumerate((sharp, chance)):
        acc = float((pred == y).double().mean())
        e1, e15, e8 = (abs(acc - conf(t)) for t in (1.0, 1.5, 8.0))
        assert table.loc[2 * i, "ours"] == f"{100 * (e15 - e1):.2f} pp"
        assert table.loc[2 * i + 1, "ours"] == f"{100 * (e8 - e1):.2f} pp"
    assert "Table 6" in table.loc[0, "paper_evidence"]
    with pytest.raises(TypeError, match="dict"):
        ce.claims([logits["sharp"]])


def test_table6_aligned_matches_paper_names_only_on_cifar100():
    z, y = random_logits(seed=4)
    teachers = [{"name": "my r56", "arch": "resnet56"}, {"name": "tiny", "arch": "resnet8"}]
    logits = {"my r56": (z, y), "tiny": (2 * z, y)}
    t = ce.table6_aligned(logits, teachers, "cifar100", seed=0)
    r = t[(t["teacher"] == "ResNet56") & (t["tau"] == 1.0)].iloc[0]
    assert r["paper (%)"] == 12.04 and r["ours"] == "my r56" and r["n seeds"] == 1
    ours = 100 * calibration.ece(torch.softmax(z, 1), y)
    assert r["ours mean (%)"] == pytest.approx(ours)
    assert r["ours - paper (points)"] == pytest.approx(ours - 12.04)
    assert r["epoch"] == "last" and r["data"] == "cifar100"
    assert t[t["teacher"] == "ResNet8"]["paper (%)"].isna().all()  # not in the paper
    assert len(t) == 2 * 11  # two teachers x the paper's 11 temperatures
    digits = ce.table6_aligned(logits, teachers, "digits")
    assert digits["paper (%)"].isna().all() and digits["ours mean (%)"].notna().all()
    with pytest.raises(ValueError, match="teacher list"):
        ce.table6_aligned({"other": (z, y)}, teachers, "cifar100")


# ----------------------------------------------------------------- tables, dry run, published


def test_tables_selection_and_dry_run_hook():
    assert presets.tables(ce.NAME) == {"6": ["teachers"]}
    cfg = presets.get(ce.NAME, "paper", dry_run=True)
    assert cfg["dry_run"] is True and cfg["data"]["subset_test"] == 32
    for t in cfg["teachers"]:  # the "paper" preset names are spelled out and cut
        r = ce.make_recipe(t["recipe"], t["arch"])
        assert (r.epochs, r.batch_size, tuple(r.milestones)) == (1, 8, ())
    assert [t["arch"] for t in cfg["teachers"]] == ["resnet56", "resnet110", "wrn_28_1"]
    assert cfg["torch_threads"] == 1 and presets.get(ce.NAME, "default")["torch_threads"] == 1


def test_skipped_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    assert ce.skipped_tables(presets.get(ce.NAME, "default")) == []  # digits: embedded
    [(table, reason)] = ce.skipped_tables(presets.get(ce.NAME, "paper"))
    assert table == "6" and "cifar-100-python.tar.gz" in reason
    assert ce.skipped_tables({"teachers": None, "data": {"name": "digits"}}) == [
        ("6", "not selected")]


def _published_file(tmp_path, arch="resnet8"):
    from kdlib.published import to_published_state_dict

    torch.manual_seed(0)
    model = build_model(arch, 100).eval()
    path = tmp_path / f"{arch}_vanilla.pth"
    torch.save({"epoch": 240, "model": to_published_state_dict(arch, model.state_dict()),
                "accuracy": 1.0, "optimizer": None}, path)
    return model, path


def test_teacher_list_and_sources(tmp_path):
    _, path = _published_file(tmp_path)
    cfg = presets.get(ce.NAME, "paper")
    teachers = ce.teacher_list(cfg, {"resnet56": str(path), "resnet8": str(path)})
    assert [t["name"] for t in teachers] == ["resnet56", "resnet110", "wrn_28_1",
                                            "resnet8 (published)"]
    assert teachers[0]["pretrained"] == str(path) and "pretrained" not in teachers[1]
    src = ce.teacher_sources(cfg, {"resnet56": str(path)})
    assert src["source"].tolist() == ["published", "trained", "trained"]
    assert src.loc[0, "file"] == str(path) and "'epochs': 240" in src.loc[1, "recipe"]
    assert ce.teacher_list(cfg) == cfg["teachers"]
    cells = ce.grid(cfg, {"resnet56": str(path)})
    from kdlib.atomic import sha256_file

    assert cells[0]["pretrained_sha256"] == sha256_file(path)
    assert "pretrained" not in cells[1]  # trained cells keep their old keys
    with pytest.raises(ValueError, match="CIFAR-100"):
        ce.teacher_list(presets.get(ce.NAME, "default"), {"resnet20": str(path)})
    with pytest.raises(FileNotFoundError, match="resnet56"):
        ce.teacher_list(cfg, {"resnet56": str(tmp_path / "nope.pth")})
    with pytest.raises(TypeError, match="dict"):
        ce.teacher_list(cfg, [("resnet56", str(path))])


def test_run_with_a_published_teacher_on_fake_cifar100(tmp_path, monkeypatch, one_thread):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from fake_datasets import write_cifar100

    from kdlib.experiments.common import load_data
    from kdlib.published import renormalized
    from kdlib.train import predict_logits

    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    write_cifar100(tmp_path / "data")
    model, path = _published_file(tmp_path)
    cfg = presets.get(ce.NAME, "paper", dry_run=True)
    cfg["teachers"] = [{"name": "r8 trained", "arch": "resnet8", "recipe": {
        "epochs": 1, "batch_size": 8, "lr": 0.05, "milestones": []}}]
    cfg["n_temperatures"] = 5
    published = {"resnet20": str(path).replace("resnet8", "resnet20")}
    _published_file(tmp_path, "resnet20")
    frame = ce.run(cfg, "paper", progress=False, published=published)
    assert frame["name"].tolist() == ["r8 trained", "resnet20 (published)"]
    assert frame["source"].tolist() == ["trained", "published"]
    assert (tmp_path / "runs" / "paper-dry-run" / f"{ce.NAME}.sqlite").is_file()
    logits = ce.teachers_logits(cfg, published)
    z, y = logits["resnet20 (published)"]
    data = load_data(cfg["data"])
    from kdlib.published import load_published

    ref = predict_logits(renormalized(load_published("resnet20", published["resnet20"]),
                                      data).eval(), data)
    assert torch.allclose(z, ref, atol=1e-5) and z.shape == (32, 100)
    row = frame.iloc[1]
    assert row["ece_t1"] == pytest.approx(calibration.ece(torch.softmax(z, 1), y))
    assert row["train_seconds"] == 0.0
    del model


# ----------------------------------------------------------------- end to end


def test_run_smoke_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    cfg = presets.get(ce.NAME, "smoke")
    cfg["teachers"] = [
        {"name": "r8 short", "arch": "resnet8",
         "recipe": {"epochs": 1, "batch_size": 128, "milestones": []}},
        {"name": "r8 longer", "arch": "resnet8",
         "recipe": {"epochs": 2, "batch_size": 128, "milestones": []}},
    ]
    cfg["data"] = {"name": "digits", "seed": 0, "subset_train": 200, "subset_test": 100}
    cfg["n_temperatures"] = 5
    frame = ce.run(cfg, "smoke", progress=False)
    assert frame["name"].tolist() == ["r8 short", "r8 longer"]
    assert (tmp_path / "runs" / "smoke" / f"{ce.NAME}.sqlite").is_file()
    logits = ce.teachers_logits(cfg)  # cache hits: same teachers, same logits
    for _, row in frame.iterrows():
        z, y = logits[row["name"]]
        assert z.shape == (100, 10) and y.shape == (100,)
        assert row["accuracy"] == pytest.approx(float((z.argmax(1) == y).float().mean()))
        assert row["ece_t1"] == pytest.approx(calibration.ece(torch.softmax(z, 1), y))
        assert row["n_test"] == 100 and len(row["ece_curve"]) == 6
    again = ce.run(cfg, "smoke", progress=False)  # finished cells come from the store
    assert again["_key"].tolist() == frame["_key"].tolist()
    assert again["_finished_at"].tolist() == frame["_finished_at"].tolist()


# ----------------------------------------------------------------- cached teachers


def test_cached_teachers_lists_this_scales_cache_without_training(tmp_path, monkeypatch,
                                                                  one_thread):
    import shutil

    from kdlib.checkpoint import load_checkpoint, save_atomic
    from kdlib.widgets import CalibrationExplorer

    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    cfg = presets.get(ce.NAME, "smoke")
    first = cfg["teachers"][0]
    spec = ce.teacher_data(cfg, first)
    z, y, record = ce.teacher_test_logits(spec, first["arch"], first["recipe"], cfg["seed"])
    # a teacher on data of no smoke preset, and a stale (old-format) copy of the first one
    ce.load_teacher({"name": "digits", "seed": 0, "subset_train": 60, "subset_test": 40},
                    "resnet8", {"preset": "smoke", "epochs": 1})
    cache = tmp_path / "data" / "teachers"
    folder = Path(record["cache_dir"])
    stale = cache / "resnet8-digits-oldformat"
    shutil.copytree(folder, stale)
    ckpt = load_checkpoint(stale / "final.pt")
    ckpt["key"]["format"] = -1
    save_atomic(ckpt, stale / "final.pt")
    assert len(list(cache.glob("*/final.pt"))) == 3

    entries = ce.cached_teachers("smoke")
    assert [e["name"] for e in entries] == [first["name"]]
    assert entries[0]["folder"] == folder
    assert entries[0]["accuracy"] == pytest.approx(record["metrics"]["accuracy"])
    z2, y2 = ce.cached_teacher_logits(entries[0])
    assert torch.equal(y2, y) and torch.allclose(z2, z, atol=1e-6)
    assert ce.cached_teachers("default") == []  # the full digits split is another data set
    with pytest.raises(ValueError, match="scale"):
        ce.cached_teachers("huge")

    ex = CalibrationExplorer.from_cache("smoke", temperatures=[1.0, 2.0])
    assert ex.names == [first["name"]] and ex.teachers == {}  # loaded on first use
    acc = 100 * record["metrics"]["accuracy"]
    assert ex.label(first["name"]) == f"{first['name']} (acc {acc:.1f}%)"
    s = ex.state(first["name"], 2.0, 15)
    assert s["ece"] == pytest.approx(calibration.ece(calibration.tempered_softmax(z, 2.0), y))
    with pytest.raises(ValueError, match="no cached teacher"):
        CalibrationExplorer.from_cache("default")


# --------------------------------------------------------------------------- plan (kdlib plan)


def _stub_cell(**cell):
    return {"stub": 1}


def test_plan_runs_lists_each_teacher_keyed_like_the_cache(tmp_path, monkeypatch):
    from kdlib.plan import TRAIN_IMAGES, teacher_run

    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    cfg = presets.get(ce.NAME, "default")
    runs = ce.plan_runs(cfg)
    # the default preset: resnet8 for 5 epochs, resnet20 for 30 on all the digits training
    # images, resnet20 for 30 on 250 of them
    full = TRAIN_IMAGES["digits"]
    assert [(r.role, r.arch, r.epochs, r.images) for r in runs] == [
        ("teacher", "resnet8", 5, full), ("teacher", "resnet20", 30, full),
        ("teacher", "resnet20", 30, 250)]
    assert not any(r.done for r in runs)
    same = teacher_run({"name": "digits", "seed": 0}, "resnet20", "default", 0)
    assert runs[1].key == same.key and runs[2].key != same.key
    assert not (tmp_path / "runs").exists()  # planning writes nothing
    assert len(ce.plan_runs(presets.get(ce.NAME, "default", select="pair=resnet8*"))) == 1


def test_plan_runs_skip_missing_data_and_read_done_from_the_store(tmp_path, monkeypatch):
    from kdlib import sweep
    from kdlib.experiments.common import stored_sweep_cells

    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    assert ce.plan_runs(presets.get(ce.NAME, "paper")) == []  # no CIFAR-100 in tmp_path
    cfg = presets.get(ce.NAME, "default")
    cells = ce.grid(cfg)
    store = tmp_path / "runs" / "default" / f"{ce.NAME}.sqlite"
    sweep.run(_stub_cell, cells[1:2], store, progress=False)
    assert [r.done for r in ce.plan_runs(cfg)] == [False, True, False]  # scale inferred
    assert stored_sweep_cells(ce.NAME, cfg, cells, ce.grid, None, "default") == [False, True,
                                                                              False]
    # the smoke store does not exist: nothing done, and it is not created
    assert stored_sweep_cells(ce.NAME, cfg, cells, ce.grid, None, "smoke") == [False] * 3
    assert not (tmp_path / "runs" / "smoke").exists()
    # a dry run reads its own store
    dry = presets.get(ce.NAME, "default", dry_run=True)
    assert [r.done for r in ce.plan_runs(dry)] == [False] * 3
    with pytest.raises(ValueError, match="scale must be one of"):
        stored_sweep_cells(ce.NAME, cfg, cells, ce.grid, None, "huge")
