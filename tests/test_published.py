"""kdlib.published: RepDistiller/mdistiller CIFAR files -> kdlib models with the same logits.

Fixtures are kdlib models renamed to the published layout; the expected key lists are written
from the layout of the published model code (module names, order, shapes), independently of
the mapping under test."""

import argparse
import os

import numpy as np
import pytest
import torch

from kdlib.data import Dataset
from kdlib.models import build_model
from kdlib.published import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    PUBLISHED_CIFAR100,
    Normalization,
    expected_normalization,
    identify_published,
    load_published,
    published_key,
    to_published_state_dict,
)

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix):
    return [f"{prefix}.{name}" for name in BN]


def _their_resnet_keys(blocks_per_stage, first_downsample):
    keys = ["conv1.weight", *_bn("bn1")]
    for stage in (1, 2, 3):
        for j in range(blocks_per_stage):
            p = f"layer{stage}.{j}"
            keys += [f"{p}.conv1.weight", *_bn(f"{p}.bn1"), f"{p}.conv2.weight", *_bn(f"{p}.bn2")]
            if j == 0 and (stage > 1 or first_downsample):
                keys += [f"{p}.downsample.0.weight", *_bn(f"{p}.downsample.1")]
    return keys + ["fc.weight", "fc.bias"]


def _their_wrn_keys(blocks_per_stage, width):
    keys = ["conv1.weight"]
    for stage in (1, 2, 3):
        for j in range(blocks_per_stage):
            p = f"block{stage}.layer.{j}"
            keys += [*_bn(f"{p}.bn1"), f"{p}.conv1.weight", *_bn(f"{p}.bn2"), f"{p}.conv2.weight"]
            if j == 0 and (stage > 1 or width != 1):
                keys.append(f"{p}.convShortcut.weight")
    return keys + [*_bn("bn1"), "fc.weight", "fc.bias"]


def _their_mobilenetv2_keys():
    keys = ["conv1.0.weight", *_bn("conv1.1")]
    for group, n in enumerate((1, 2, 3, 4, 3, 3, 1)):
        for j in range(n):
            for conv, bn in ((0, 1), (3, 4), (6, 7)):
                p = f"blocks.{group}.{j}.conv"
                keys += [f"{p}.{conv}.weight", *_bn(f"{p}.{bn}")]
    return keys + ["conv2.0.weight", *_bn("conv2.1"), "classifier.0.weight", "classifier.0.bias"]


def _trained_looking(arch, num_classes=100, seed=0):
    """A kdlib model in eval mode with non-trivial BatchNorm statistics (so that a tensor
    landing in the wrong BN buffer changes the logits)."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.num_batches_tracked.fill_(3)
    return model.eval()


def _save(obj, path, **kwargs):
    torch.save(obj, path, **kwargs)
    return str(path)


def _logits_gap(a, b, x):
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("resnet8", _their_resnet_keys(1, first_downsample=False)),
        ("resnet20", _their_resnet_keys(3, first_downsample=False)),
        ("resnet8x4", _their_resnet_keys(1, first_downsample=True)),
        ("wrn_16_1", _their_wrn_keys(2, width=1)),
        ("wrn_16_2", _their_wrn_keys(2, width=2)),
        ("mobilenetv2", _their_mobilenetv2_keys()),
    ],
)
def test_mapping_gives_the_published_names_in_their_order(arch, expected):
    renamed = to_published_state_dict(arch, build_model(arch, 100).state_dict())
    assert list(renamed) == expected


def test_published_shapes_of_known_tensors():
    wide = to_published_state_dict("resnet8x4", build_model("resnet8x4", 100).state_dict())
    assert wide["conv1.weight"].shape == (32, 3, 3, 3)
    assert wide["layer1.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    assert wide["fc.weight"].shape == (100, 256)
    wrn = to_published_state_dict("wrn_40_2", build_model("wrn_40_2", 100).state_dict())
    assert wrn["block1.layer.0.convShortcut.weight"].shape == (32, 16, 1, 1)
    assert wrn["block3.layer.5.conv2.weight"].shape == (128, 128, 3, 3)
    assert wrn["bn1.running_var"].shape == (128,)
    mbv2 = to_published_state_dict("mobilenetv2", build_model("mobilenetv2", 100).state_dict())
    assert mbv2["conv1.0.weight"].shape == (16, 3, 3, 3)
    assert mbv2["blocks.1.0.conv.0.weight"].shape == (48, 8, 1, 1)  # expand 8 -> 6 * 8
    assert mbv2["blocks.1.0.conv.3.weight"].shape == (48, 1, 3, 3)  # depthwise
    assert mbv2["blocks.6.0.conv.6.weight"].shape == (160, 480, 1, 1)
    assert mbv2["conv2.0.weight"].shape == (1280, 160, 1, 1)
    assert mbv2["classifier.0.weight"].shape == (100, 1280)
    assert published_key("wrn_16_2", "final_bn.weight") == "bn1.weight"
    assert published_key("resnet56", "stages.2.8.bn2.bias") == "layer3.8.bn2.bias"


@pytest.mark.parametrize("arch", ["resnet8", "resnet8x4", "wrn_16_2", "mobilenetv2"])
def test_three_file_forms_load_with_the_same_logits(arch, tmp_path, one_thread):
    original = _trained_looking(arch)
    theirs = to_published_state_dict(arch, original.state_dict())
    files = {
        "checkpoint": _save({"epoch": 240, "model": theirs, "accuracy": torch.tensor(73.25),
                             "optimizer": {"state": {}, "param_groups": []}},
                            tmp_path / "ckpt_epoch_240.pth"),
        "state_dict": _save(theirs, tmp_path / "bare.pth"),
        "dataparallel": _save({"epoch": 10, "model": {f"module.{k}": v for k, v in theirs.items()},
                               "best_acc": 70.5}, tmp_path / "dp.pth"),
    }
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for form, path in files.items():
        loaded = load_published(arch, path)
        assert not loaded.training
        assert _logits_gap(loaded, original, x) <= 1e-6, form
        assert loaded.input_normalization is PUBLISHED_CIFAR100
    assert load_published(arch, files["checkpoint"]).published_meta == {
        "arch": arch, "path": files["checkpoint"], "form": "checkpoint", "epoch": 240,
        "accuracy": pytest.approx(73.25), "module_prefix": False}
    meta = load_published(arch, files["dataparallel"]).published_meta
    assert (meta["form"], meta["epoch"], meta["accuracy"], meta["module_prefix"]) == \
        ("checkpoint", 10, 70.5, True)
    assert load_published(arch, files["state_dict"]).published_meta["form"] == "state_dict"


def test_loaded_weights_differ_from_a_fresh_model(tmp_path, one_thread):
    """The equality above is not an accident of initialization: another seed's weights give
    other logits, and loading them makes the logits equal."""
    a, b = _trained_looking("resnet8", seed=0), _trained_looking("resnet8", seed=1)
    x = torch.randn(2, 3, 32, 32)
    assert _logits_gap(a, b, x) > 1e-2
    path = _save(to_published_state_dict("resnet8", b.state_dict()), tmp_path / "b.pth")
    assert _logits_gap(load_published("resnet8", path), b, x) <= 1e-6


def test_last_form_old_numpy_accuracy_and_legacy_format(tmp_path, one_thread):
    """`{'opt': Namespace, ...}` files, numpy scalars (pickled by numpy 1.x under
    numpy.core.multiarray) and the pre-1.6 non-zip format all load with weights_only."""
    original = _trained_looking("resnet8")
    theirs = to_published_state_dict("resnet8", original.state_dict())
    opt = argparse.Namespace(model="resnet8", learning_rate=0.05, lr_decay_epochs=[150, 180])
    last = _save({"opt": opt, "model": theirs, "optimizer": {}}, tmp_path / "resnet8_last.pth")
    raw_path = tmp_path / "legacy.pth"
    torch.save({"epoch": 240, "model": theirs, "accuracy": np.float64(71.5)}, raw_path,
               _use_new_zipfile_serialization=False, pickle_protocol=2)
    raw = raw_path.read_bytes()
    if b"numpy._core.multiarray\n" in raw:  # numpy 2 wrote it; make it read like numpy 1.x
        raw_path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert b"numpy.core.multiarray\nscalar" in raw_path.read_bytes()
    x = torch.randn(2, 3, 32, 32)
    assert _logits_gap(load_published("resnet8", last), original, x) <= 1e-6
    legacy = load_published("resnet8", raw_path)
    assert _logits_gap(legacy, original, x) <= 1e-6
    assert legacy.published_meta["accuracy"] == 71.5


def test_missing_batch_counters_are_accepted(tmp_path):
    theirs = to_published_state_dict("resnet8", _trained_looking("resnet8").state_dict())
    no_counters = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}
    assert len(no_counters) == len(theirs) - 9
    model = load_published("resnet8", _save(no_counters, tmp_path / "old.pth"))
    assert int(model.stem[1].num_batches_tracked) == 0


@pytest.fixture()
def resnet8_file(tmp_path):
    theirs = to_published_state_dict("resnet8", _trained_looking("resnet8").state_dict())
    return theirs, tmp_path


def _refused(arch, obj, tmp_path, **kwargs):
    path = _save(obj, tmp_path / "file.pth")
    with pytest.raises(ValueError) as info:
        load_published(arch, path, **kwargs)
    return str(info.value)


def test_missing_extra_and_misshaped_tensors_are_named(resnet8_file):
    theirs, tmp = resnet8_file
    missing = {k: v for k, v in theirs.items() if k != "layer2.0.downsample.0.weight"}
    msg = _refused("resnet8", missing, tmp)
    assert "1 missing keys (layer2.0.downsample.0.weight)" in msg and "Nothing was loaded" in msg
    extra = {**theirs, "fc2.weight": torch.zeros(3)}
    assert "1 unexpected keys (fc2.weight)" in _refused("resnet8", extra, tmp)
    shaped = {**theirs, "layer1.0.bn2.running_var": torch.ones(17)}
    msg = _refused("resnet8", shaped, tmp)
    assert "layer1.0.bn2.running_var: file (17,) vs resnet8 (16,)" in msg


def test_other_architectures_are_refused_naming_the_mismatch(resnet8_file):
    theirs, tmp = resnet8_file
    msg = _refused("resnet14", {"model": theirs}, tmp)
    assert "not a resnet14 with 100 classes" in msg
    assert "it looks like a resnet8 with 100 classes" in msg
    assert "layer1.1.conv1.weight" in msg
    msg = _refused("resnet8x4", theirs, tmp)
    assert "conv1.weight: file (16, 3, 3, 3) vs resnet8x4 (32, 3, 3, 3)" in msg
    assert "layer1.0.downsample.0.weight" in msg
    msg = _refused("resnet8", theirs, tmp, num_classes=10)
    assert "fc.weight: file (100, 64) vs resnet8 (10, 64)" in msg
    wrn = to_published_state_dict("wrn_16_2", build_model("wrn_16_2", 100).state_dict())
    msg = _refused("resnet8", wrn, tmp)
    assert "it looks like a wrn_16_2 with 100 classes" in msg and "block1.layer.0.bn1.weight" in msg
    vgg = {"features.0.weight": torch.zeros(64, 3, 3, 3),
           "classifier.weight": torch.zeros(100, 512)}
    assert "its keys match no layout kdlib can load" in _refused("wrn_16_2", vgg, tmp)


def test_unsafe_and_malformed_files_are_refused(resnet8_file):
    from fractions import Fraction

    theirs, tmp = resnet8_file
    msg = _refused("resnet8", {"model": theirs, "accuracy": Fraction(1, 3)}, tmp)
    assert "weights_only=True" in msg and "fractions.Fraction" in msg
    assert "non-tensor entries: lr" in _refused("resnet8", {"lr": 0.1}, tmp)
    assert "state_dict is empty" in _refused("resnet8", {}, tmp)
    assert "got list" in _refused("resnet8", [1, 2], tmp)
    text = tmp / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch file"):
        load_published("resnet8", text)


def test_argument_validation(resnet8_file):
    theirs, tmp = resnet8_file
    path = _save(theirs, tmp / "ok.pth")
    with pytest.raises(ValueError, match="no published layout for architecture 'mlp'.*resnet"):
        load_published("mlp", path)
    with pytest.raises(ValueError, match="no published layout for architecture 'vgg13'"):
        load_published("vgg13", path)
    with pytest.raises(TypeError, match="arch must be a string"):
        load_published(8, path)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        load_published("resnet8", path, num_classes=1)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        load_published("resnet8", 3)
    with pytest.raises(FileNotFoundError, match="no published checkpoint"):
        load_published("resnet8", os.path.join(tmp, "absent.pth"))
    with pytest.raises(ValueError, match="invalid model name 'resnet9'"):
        load_published("resnet9", path)  # a family name with a depth build_model refuses
    assert isinstance(load_published("MobileNetV2", _save(
        to_published_state_dict("mobilenetv2", build_model("mobilenetv2", 100).state_dict()),
        tmp / "mbv2.pth")), torch.nn.Module)


def test_identify_published():
    def theirs(arch, classes=100):
        return to_published_state_dict(arch, build_model(arch, classes).state_dict())

    assert identify_published(theirs("resnet20")) == ("resnet20", 100)
    assert identify_published(theirs("resnet8x4", 10)) == ("resnet8x4", 10)
    assert identify_published(theirs("wrn_40_1")) == ("wrn_40_1", 100)
    assert identify_published({f"module.{k}": v for k, v in theirs("wrn_16_2").items()}) == \
        ("wrn_16_2", 100)
    assert identify_published(theirs("mobilenetv2")) == ("mobilenetv2", 100)
    assert identify_published({"features.0.weight": torch.zeros(1)}) == (None, None)


def _tiny_cifar(n=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 100
    return Dataset("cifar100", x, y, x.clone(), y.clone(), [str(c) for c in range(100)],
                   mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_normalization_constants_and_use(tmp_path, one_thread):
    from kdlib.train import predict_logits

    assert CIFAR100_MEAN == (0.5071, 0.4867, 0.4408)
    assert CIFAR100_STD == (0.2675, 0.2565, 0.2761)
    data = _tiny_cifar()
    kdlib_model = build_model("resnet8", 100)
    own = expected_normalization(kdlib_model, data)
    assert (own.name, own.mean, own.std) == ("train-split", data.mean, data.std)

    original = _trained_looking("resnet8")
    path = _save(to_published_state_dict("resnet8", original.state_dict()), tmp_path / "t.pth")
    teacher = load_published("resnet8", path)
    norm = expected_normalization(teacher, data)
    assert norm is PUBLISHED_CIFAR100
    moved = norm.on(data)
    assert (moved.mean, moved.std) == (CIFAR100_MEAN, CIFAR100_STD)
    assert moved.test_x is data.test_x and data.mean == (0.5, 0.5, 0.5)  # data left alone
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    by_hand = (data.test_x.float() / 255 - mean) / std
    assert torch.allclose(norm.apply(data.test_x.float() / 255), by_hand)
    with torch.no_grad():
        expected = original(by_hand)
    got = predict_logits(teacher, moved, device="cpu")
    assert float((got - expected).abs().max()) <= 1e-5
    wrong = predict_logits(teacher, data, device="cpu")  # kdlib's own statistics
    assert float((wrong - expected).abs().max()) > 1e-2


def test_normalization_validation():
    with pytest.raises(ValueError, match="both be given"):
        Normalization("x", (0.5,), None)
    with pytest.raises(ValueError, match="std values must be > 0"):
        Normalization("x", (0.5,), (0.0,))
    with pytest.raises(ValueError, match="one value per channel"):
        Normalization("x", (0.5, 0.5), (0.2,))
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        Normalization("", (0.5,), (0.2,))
    with pytest.raises(TypeError, match="kdlib.data.Dataset"):
        PUBLISHED_CIFAR100.on({"mean": 1})
    with pytest.raises(TypeError, match="torch.nn.Module"):
        expected_normalization("resnet8", _tiny_cifar())
    assert Normalization("raw", None, None).apply(torch.ones(1, 2)).sum() == 2


def test_get_teacher_pretrained_registers_and_renormalizes(tmp_path, one_thread):
    """A published teacher from get_teacher(pretrained=) takes batches normalized with the
    data's own statistics and gives the original network's logits on the published ones;
    the second call loads the verified cached copy (same logits, the file may be gone)."""
    from kdlib.published import Renormalized
    from kdlib.teachers import get_teacher
    from kdlib.train import predict_logits

    data = _tiny_cifar()
    original = _trained_looking("resnet8")
    path = _save({"epoch": 240, "model": to_published_state_dict("resnet8",
                                                                 original.state_dict()),
                  "accuracy": 71.5, "optimizer": None}, tmp_path / "ckpt_epoch_240.pth")
    cache = tmp_path / "cache"
    teacher, record = get_teacher("resnet8", data, pretrained=path, cache_dir=cache)
    assert isinstance(teacher, Renormalized)
    assert record["published"]["accuracy"] == 71.5 and record["published"]["epoch"] == 240
    assert record["normalization"] == "published-cifar100"
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = original((data.test_x.float() / 255 - mean) / std)
    got = predict_logits(teacher, data, device="cpu")  # kdlib's batches, data's own stats
    assert float((got - expected).abs().max()) <= 1e-4
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_teacher("resnet8", data, pretrained=path, cache_dir=cache)
    with pytest.raises(TypeError, match="needs a recipe"):
        get_teacher("resnet8", data, cache_dir=cache)


def test_folder_lock_makes_a_second_process_wait(tmp_path):
    """While one process holds a teacher folder's lock, another one blocks until it is
    released (measured by the order of the events the two write)."""
    import subprocess
    import sys
    import textwrap
    import time

    from kdlib.teachers import folder_lock

    folder = tmp_path / "resnet8-digits-abc"
    log = tmp_path / "log"
    code = textwrap.dedent(f"""
        from kdlib.teachers import folder_lock
        with folder_lock({str(folder)!r}):
            open({str(log)!r}, "a").write("child\\n")
    """)
    with folder_lock(folder):
        child = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(1.0)
        assert not log.exists() or log.read_text() == ""  # still waiting
        log.write_text("parent\n")
    assert child.wait(timeout=60) == 0
    assert log.read_text() == "parent\nchild\n"
