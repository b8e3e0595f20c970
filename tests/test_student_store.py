import pytest
import torch

from kdlib import student_store as ss
from kdlib.checkpoint import hash_path
from kdlib.recipe import Recipe


def _teacher(**changes):
    spec = {"data": {"name": "digits"}, "arch": "resnet20", "recipe": "default", "seed": 0}
    spec.update(changes)
    return ss.teacher_id(spec["data"], spec["arch"], spec["recipe"], spec["seed"])


def test_keys_ignore_what_does_not_change_the_weights():
    a = ss.student_key(_teacher(), "resnet8", "paper", "kd", 4.0, 0)
    same = ss.student_key(
        _teacher(data={"name": "digits", "seed": 0, "download": True},
                 recipe={"epochs": 30, "milestones": [19, 22, 26], "checkpoint_every": 5}),
        "resnet8", {"preset": "paper", "checkpoint_every": 0}, "kd", 4, 0)
    assert a == same and ss.key_digest(a) == ss.key_digest(same)
    assert len(ss.key_digest(a)) == 24
    # the default recipe is 30 epochs with milestones 19, 22, 26 (scaled 150/180/210 of 240)
    expected = Recipe(30, milestones=(19, 22, 26)).to_dict()
    del expected["checkpoint_every"]
    assert ss.recipe_key("default") == expected
    for other in (ss.student_key(_teacher(seed=1), "resnet8", "paper", "kd", 4.0, 0),
                  ss.student_key(_teacher(), "resnet8", "paper", "kd", 4.0, 1),
                  ss.student_key(_teacher(), "resnet8", "paper", "dist", 4.0, 0),
                  ss.student_key(_teacher(), "resnet8", "paper", "kd", 4.5, 0),
                  ss.student_key(_teacher(), "resnet8", "paper", "kd", 4.0, 0, alpha=0.5),
                  ss.student_key(_teacher(), "resnet8", {"preset": "paper", "lr": 0.1},
                                 "kd", 4.0, 0),
                  ss.student_key(_teacher(), "resnet8", "paper", "fitnet", 4.0, 0,
                                 loss_kwargs={"stage": 1})):
        assert ss.key_digest(other) != ss.key_digest(a)


def test_key_validation():
    with pytest.raises(ValueError, match="teacher_id"):
        ss.student_key({"arch": "x"}, "resnet8", "paper", "kd", 4.0, 0)
    with pytest.raises(ValueError, match="alpha"):
        ss.student_key(_teacher(), "resnet8", "paper", "kd", 4.0, 0, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        ss.student_key(_teacher(), "resnet8", "paper", "kd", 0.0, 0)
    with pytest.raises(ValueError, match="name"):
        ss.data_key({"seed": 0})


def test_save_load_round_trip_and_corruption(tmp_path):
    key = ss.student_key(_teacher(), "linear", "smoke", "kd", 2.0, 3)
    model = torch.nn.Linear(3, 2)
    logits = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    path = ss.save_student(tmp_path, key, model, logits,
                           {"metrics": {"accuracy": 0.5}, "shape": (2, 3)})
    assert path == tmp_path / f"{ss.key_digest(key)}.pt" and hash_path(path).is_file()
    got = ss.load_student(tmp_path, key)
    assert torch.equal(got["test_logits"], logits) and got["key"] == key
    assert torch.equal(got["model"]["weight"], model.weight.detach())
    assert got["record"] == {"metrics": {"accuracy": 0.5}, "shape": [2, 3]}
    other = ss.student_key(_teacher(), "linear", "smoke", "kd", 2.0, 4)
    assert ss.load_student(tmp_path, other) is None
    path.write_bytes(path.read_bytes()[:-7])          # truncated: moved aside, missing
    with pytest.warns(UserWarning, match="retraining"):
        assert ss.load_student(tmp_path, key) is None
    assert not path.exists()
    with pytest.raises(ValueError, match="N x C"):
        ss.save_student(tmp_path, key, model, torch.zeros(3), {})


def test_distill_students_trains_only_the_missing(tmp_path, monkeypatch):
    from kdlib.experiments.common import load_data
    from kdlib.train import make_model

    d = load_data({"name": "digits", "seed": 0, "subset_train": 64, "subset_test": 40})
    teacher = make_model("resnet8", d, seed=5).eval()
    tid = _teacher(arch="resnet8", data={"name": "digits", "subset_train": 64,
                                         "subset_test": 40})
    recipe = {"epochs": 1, "batch_size": 32}
    first = ss.distill_students(tmp_path, d, teacher, tid, "resnet8", recipe,
                                [{"loss": "kd", "temperature": 2.0}], seed=0)
    assert first[0]["cached"] is False and first[0]["test_logits"].shape == (40, 10)
    import kdlib.stacked

    calls = []
    real = kdlib.stacked.distill_stacked

    def spy(models, *args, **kwargs):
        calls.append(len(models))
        return real(models, *args, **kwargs)

    monkeypatch.setattr(kdlib.stacked, "distill_stacked", spy)
    both = ss.distill_students(tmp_path, d, teacher, tid, "resnet8", recipe,
                               [{"loss": "kd", "temperature": 2.0},
                                {"loss": "dist", "temperature": 2.0}], seed=0)
    assert calls == [1]                                 # only DIST was trained
    assert both[0]["cached"] and not both[1]["cached"]
    assert torch.equal(both[0]["test_logits"], first[0]["test_logits"])
    # the stored logits are the model's: rebuild it from the kept weights
    m = make_model("resnet8", d, seed=0)
    m.load_state_dict(both[1]["model"])
    from kdlib.train import predict_logits

    torch.testing.assert_close(predict_logits(m, d), both[1]["test_logits"])
    with pytest.raises(ValueError, match="specs"):
        ss.distill_students(tmp_path, d, teacher, tid, "resnet8", recipe,
                            [{"loss": "kd"}], seed=0)
