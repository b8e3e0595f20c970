"""Selections (kdlib.selection), the dry-run cut (kdlib.dry_run), presets.get(select=,
dry_run=), and missing-data detection."""

import pytest

from kdlib import dry_run, presets
from kdlib.data import missing_dataset
from kdlib.selection import apply_selection, parse_selection

CFG = {
    "pairs": [
        {"name": "resnet56->resnet14", "data": {"name": "cifar100"},
         "teacher_recipe": {"epochs": 240, "lr": 0.05, "batch_size": 64,
                            "milestones": [150, 180, 210]}, "temperatures": [1.0, 4.0]},
        {"name": "wrn_28_2->wrn_22_1", "data": {"name": "cifar100"}, "seeds": [0, 2]},
    ],
    "figure4": {"teacher_epochs": [60, 120]},
    "seeds": [0, 1, 2],
    "n_boot": 2000,
}
TABLES = {"6": ["pairs"], "figure4": ["figure4"]}


def test_parse_selection_reads_keys_aliases_and_lists():
    assert parse_selection("table=6 chain=a,b seed=0,2") == {
        "table": ["6"], "pair": ["a", "b"], "seed": ["0", "2"]}
    assert parse_selection("") == {} and parse_selection(None) == {}


@pytest.mark.parametrize("text, match", [
    ("table", "key=value"), ("colour=red", "unknown selection key"),
    ("seed=0 seed=1", "given twice"), ("seed=x", "non-negative integers"),
])
def test_parse_selection_errors_name_what_is_allowed(text, match):
    with pytest.raises(ValueError, match=match):
        parse_selection(text)


def test_table_selection_sets_the_other_tables_to_none():
    out = apply_selection(CFG, "table=figure4", TABLES)
    assert out["pairs"] is None and out["figure4"] == CFG["figure4"]
    assert CFG["pairs"][0]["name"] == "resnet56->resnet14"  # the input is not changed


def test_pair_glob_and_seed_filter_items_and_top_level_seeds():
    out = apply_selection(CFG, "pair=wrn_* seed=2", TABLES)
    assert [p["name"] for p in out["pairs"]] == ["wrn_28_2->wrn_22_1"]
    assert out["pairs"][0]["seeds"] == [2] and out["seeds"] == [2]
    # an item whose own seeds do not include the selected one is dropped
    out = apply_selection(CFG, "seed=1", TABLES)
    assert [p["name"] for p in out["pairs"]] == ["resnet56->resnet14"]


@pytest.mark.parametrize("text, match", [
    ("table=7", r"no table \['7'\].*tables: \['6', 'figure4'\]"),
    ("pair=vgg*", r"matches none of \['resnet56->resnet14', 'wrn_28_2->wrn_22_1'\]"),
    ("seed=9", r"seed \[9\] is not among the seeds \[0, 1, 2\]"),
])
def test_selection_matching_nothing_names_what_exists(text, match):
    with pytest.raises(ValueError, match=match):
        apply_selection(CFG, text, TABLES)


def test_table_selection_without_declared_tables_is_an_error():
    with pytest.raises(ValueError, match="declares no tables"):
        apply_selection(CFG, "table=6", None)


def test_dry_run_cut_keeps_the_work_and_shrinks_each_run():
    out = dry_run.cut(CFG)
    recipe = out["pairs"][0]["teacher_recipe"]
    assert recipe == {"epochs": 1, "lr": 0.05, "batch_size": 8, "milestones": []}
    assert out["pairs"][0]["data"] == {"name": "cifar100", "subset_train": 16,
                                       "subset_test": 32}
    assert out["pairs"][0]["temperatures"] == [1.0, 4.0]
    assert out["pairs"][1]["seeds"] == [0] and out["seeds"] == [0]
    assert out["n_boot"] == 50 and out["figure4"] == CFG["figure4"]
    gmm = dry_run.cut({"data": {"name": "gmm100", "n_train": 2000, "n_test": 20000}})
    assert gmm["data"] == {"name": "gmm100", "n_train": 16, "n_test": 32}


def test_presets_get_applies_selection_then_dry_run_hook():
    name = "test-selection-experiment"
    presets.register(name, {s: CFG for s in presets.SCALES}, tables=TABLES,
                     dry_run=lambda cfg: {**cfg, "figure4": {"teacher_epochs": [1]}},
                     replace=True)
    try:
        cfg = presets.get(name, "paper", select="seed=2", dry_run=True)
        assert cfg["seeds"] == [2] and cfg["dry_run"] is True
        assert cfg["figure4"] == {"teacher_epochs": [1]}
        assert "dry_run" not in presets.get(name, "paper")
        assert presets.tables(name) == TABLES
        with pytest.raises(ValueError, match="names parameters"):
            presets.register(name, {s: CFG for s in presets.SCALES},
                             tables={"x": ["nope"]}, replace=True)
    finally:
        presets.unregister(name)


def test_missing_dataset_names_the_file_to_fetch(tmp_path):
    assert missing_dataset("digits", tmp_path) is None
    message = missing_dataset("tinyimagenet", tmp_path)
    assert "tiny-imagenet-200.zip" in message and str(tmp_path) in message
    (tmp_path / "cifar-100-python").mkdir()
    assert missing_dataset("cifar100", tmp_path) is None
    assert "cifar-10-python.tar.gz" in missing_dataset("cifar10", tmp_path)
