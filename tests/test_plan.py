"""kdlib.plan: MACs of the paper's networks, the cost model, deduplication and totals."""

import pytest

from kdlib.plan import (
    DEFAULT_THROUGHPUT,
    PlannedRun,
    format_plan,
    gpu_hours,
    macs,
    plan_frame,
    plan_totals,
    run_cost,
    train_images,
)


def test_macs_match_hand_counts():
    # MLP 2 -> 3 -> 10: 2*3 + 3*10 multiply-accumulates
    assert macs("mlp", "gmm10", {"in_features": 2, "hidden": [3]}) == 36
    # ResNet-56 on CIFAR: the widely quoted ~125.5 M MACs for the convolutions; + 64*100 head
    assert macs("resnet56") == pytest.approx(125.75e6, rel=1e-3)
    # 64x64 inputs cost 4x the convolutions of 32x32 ones (head aside)
    conv32 = macs("resnet14", "cifar100") - 64 * 100
    conv64 = macs("resnet14", "tinyimagenet") - 64 * 200
    assert conv64 == 4 * conv32


def test_cost_and_hours_by_hand():
    run = PlannedRun("02", "student", "resnet14", "cifar100", epochs=2, images=10, key="a",
                     members=3, teacher="resnet56")
    expected = 2 * 10 * (3 * 3 * macs("resnet14") + macs("resnet56"))
    assert run_cost(run) == expected
    # one resnet14 student for one image-epoch at 1 image/s takes 1 second
    one = PlannedRun("x", "student", "resnet14", "cifar100", 1, 1, key="b")
    assert gpu_hours(run_cost(one), throughput=1.0) == pytest.approx(1 / 3600)
    with pytest.raises(ValueError, match="throughput must be"):
        gpu_hours(1.0, throughput=0)


def test_duplicates_and_done_runs_cost_nothing_and_are_counted():
    t = PlannedRun("02", "teacher", "resnet56", "cifar100", 240, 50_000, key="T")
    s = PlannedRun("02", "student", "resnet14", "cifar100", 240, 50_000, key="S", members=22,
                   teacher="resnet56")
    done = PlannedRun("06", "student", "resnet14", "cifar100", 240, 50_000, key="D", done=True)
    frame = plan_frame([t, s, t, s, done])
    totals = plan_totals(frame)
    assert (totals["runs"], totals["unique"], totals["saved_by_dedup"]) == (5, 3, 2)
    assert (totals["done"], totals["to_train"], totals["models_to_train"]) == (1, 2, 23)
    hours = gpu_hours(run_cost(t)) + gpu_hours(run_cost(s))
    assert totals["gpu_hours"] == pytest.approx(hours)
    assert totals["gpu_hours_without_dedup"] == pytest.approx(2 * hours)
    assert totals["saved_gpu_hours"] == pytest.approx(hours)
    text = format_plan(frame)
    assert "deduplication saves 2 runs" in text and f"{DEFAULT_THROUGHPUT:,.0f}" in text


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="role must be one of"):
        PlannedRun("02", "oracle", "resnet14", "cifar100", 1, 1, key="k")
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        PlannedRun("02", "student", "resnet14", "cifar100", 0, 1, key="k")
    assert train_images({"name": "cifar100"}) == 50_000
    assert train_images({"name": "cifar100", "subset_train": 16}) == 16
    assert train_images({"name": "gmm100", "n_train": 2000}) == 2000


def test_done_anywhere_counts_for_the_shared_key_and_teacher_kwargs_price_mlps():
    a = PlannedRun("02", "student", "mlp", "gmm100", 10, 100, key="K",
                   model_kwargs={"in_features": 2, "hidden": [4]}, teacher="mlp",
                   teacher_kwargs={"in_features": 2, "hidden": [8]})
    b = PlannedRun("06", "student", "mlp", "gmm100", 10, 100, key="K", done=True,
                   model_kwargs={"in_features": 2, "hidden": [4]})
    frame = plan_frame([a, b])
    assert frame["done"].tolist() == [True, True] and plan_totals(frame)["to_train"] == 0
    student = 2 * 4 + 4 * 100
    teacher = 2 * 8 + 8 * 100
    assert run_cost(a) == 10 * 100 * (3 * student + teacher)


def test_stored_cells_reads_a_store_and_never_creates_one(tmp_path):
    from kdlib import sweep
    from kdlib.plan import stored_cells

    store = tmp_path / "s.sqlite"
    assert stored_cells(store, [{"x": 1}]) == [False] and not store.exists()
    sweep.run(_square, [{"x": 1}], store, progress=False, namespace="n")
    assert stored_cells(store, [{"x": 1}, {"x": 2}], "n") == [True, False]


def _square(x):
    return {"y": x * x}
