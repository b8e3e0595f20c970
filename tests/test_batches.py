"""kdlib.batches: epoch coverage, reproducibility, normalization and exact crop/flip pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kdlib.batches import Batch, DeviceData, augment_batch, crop_flip, normalize, to_float
from kdlib.data import Dataset


def image_dataset(n_train=10, n_test=5, pad=4, flip=True, value=None, hw=8):
    """uint8 RGB images; pixel value 100*c + 10*h + w unless `value` is given."""
    def images(n):
        if value is not None:
            return torch.full((n, 3, hw, hw), value, dtype=torch.uint8)
        c, h, w = torch.meshgrid(torch.arange(3), torch.arange(hw), torch.arange(hw),
                                 indexing="ij")
        base = (100 * c + 10 * h + w) % 256
        return (base[None] + torch.arange(n)[:, None, None, None]).clamp(max=255).to(torch.uint8)

    return Dataset(
        name="toy", train_x=images(n_train), train_y=torch.arange(n_train) % 3,
        test_x=images(n_test), test_y=torch.arange(n_test) % 3, classes=["a", "b", "c"],
        mean=(0.5, 0.25, 0.125), std=(0.5, 0.25, 2.0), augment=True, pad=pad, flip=flip,
    )


def reference_crop_flip(img, pad, dy, dx, flip):
    """One C x H x W image, the slow obvious way."""
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=img.dtype)
    padded[:, pad:pad + h, pad:pad + w] = img
    out = padded[:, dy:dy + h, dx:dx + w]
    return out.flip(-1) if flip else out


def test_one_epoch_visits_every_index_once():
    data = DeviceData(image_dataset(n_train=23))
    gen = torch.Generator().manual_seed(0)
    batches = list(data.train_batches(5, gen))
    assert [len(b.idx) for b in batches] == [5, 5, 5, 5, 3]
    assert data.steps_per_epoch(5) == 5 and data.steps_per_epoch(5, drop_last=True) == 4
    seen = torch.cat([b.idx for b in batches])
    assert sorted(seen.tolist()) == list(range(23))
    assert seen.tolist() != list(range(23))  # shuffled
    for b in batches:
        assert isinstance(b, Batch) and torch.equal(b.y, data.train_y[b.idx])
        assert b.x.dtype == torch.float32 and b.x.shape[1:] == (3, 8, 8)
    dropped = list(data.train_batches(5, gen, drop_last=True))
    assert [len(b.idx) for b in dropped] == [5, 5, 5, 5]
    assert len(set(torch.cat([b.idx for b in dropped]).tolist())) == 20


def test_drop_single_drops_only_a_last_batch_of_one_sample():
    data = DeviceData(image_dataset(n_train=11))
    sizes = [len(b.y) for b in data.train_batches(5, torch.Generator().manual_seed(0),
                                                  drop_single=True)]
    assert sizes == [5, 5] and data.steps_per_epoch(5, drop_single=True) == 2
    # the kept batches are those of the full epoch, and nothing is drawn for the dropped one
    g_full, g_drop = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    full = list(data.train_batches(5, g_full))
    kept = list(data.train_batches(5, g_drop, drop_single=True))
    assert [len(b.y) for b in full] == [5, 5, 1]
    for a, b in zip(full, kept):
        assert torch.equal(a.idx, b.idx) and torch.equal(a.x, b.x)
    # other remainders (and batch_size 1) are unaffected
    assert data.steps_per_epoch(4, drop_single=True) == 3
    assert data.steps_per_epoch(1, drop_single=True) == 11
    with pytest.raises(TypeError, match="drop_single must be True or False"):
        data.train_batches(5, torch.Generator(), drop_single=1)


def test_non_finite_inputs_and_bad_labels_are_refused_at_construction():
    ds = image_dataset(n_train=6)
    vec = Dataset(name="v", train_x=torch.zeros(4, 2), train_y=torch.tensor([0, 1, 0, 1]),
                  test_x=torch.zeros(2, 2), test_y=torch.tensor([0, 1]), classes=["a", "b"])
    vec.test_x[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"data.test_x must hold finite values.*\(1, 0\)"):
        DeviceData(vec)
    ds.train_y[2] = 7  # mutated after the Dataset checked it
    with pytest.raises(ValueError, match=r"data.train_y must lie in \[0, 3\), got \[0, 7\]"):
        DeviceData(ds)


def test_same_generator_seed_gives_identical_batches():
    data = DeviceData(image_dataset(n_train=17))

    def epoch(seed):
        return list(data.train_batches(4, torch.Generator().manual_seed(seed)))

    first, second, other = epoch(7), epoch(7), epoch(8)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.idx, b.idx) and torch.equal(a.y, b.y)
    assert not all(torch.equal(a.idx, b.idx) for a, b in zip(first, other, strict=True))


def test_normalization_matches_hand_computed_values():
    ds = image_dataset(value=51)  # 51 / 255 = 0.2
    data = DeviceData(ds)
    batch = next(data.test_batches(5))
    expected = torch.tensor([(0.2 - 0.5) / 0.5, (0.2 - 0.25) / 0.25, (0.2 - 0.125) / 2.0])
    torch.testing.assert_close(batch.x[:, :, 3, 4], expected.expand(5, 3), rtol=0, atol=1e-6)
    x = torch.tensor([[[[1.0, 3.0]], [[2.0, 6.0]]]])  # 1 x 2 x 1 x 2
    out = normalize(x, (1.0, 2.0), (2.0, 4.0))
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]]]]))
    vectors = torch.tensor([[1.0, 10.0], [3.0, 20.0]])
    torch.testing.assert_close(normalize(vectors, [2.0, 10.0], [1.0, 5.0]),
                               torch.tensor([[-1.0, 0.0], [1.0, 2.0]]))
    assert normalize(vectors, None, None) is vectors
    torch.testing.assert_close(to_float(torch.tensor([0, 51, 255], dtype=torch.uint8)),
                               torch.tensor([0.0, 0.2, 1.0]))


def test_crop_with_known_offsets_gives_exact_pixels():
    img = image_dataset(n_train=2).train_x[:2].float()  # value 100c + 10h + w (+ sample index)
    offsets = torch.tensor([[0, 3], [4, 4]])
    out = crop_flip(img, 2, offsets)
    # sample 0, offset (0, 3) with pad 2: output (i, j) reads image row i - 2, column j + 1
    assert torch.all(out[0, :, :2, :] == 0)  # the top two rows are padding
    assert out[0, 1, 2, 0] == 100 + 0 + 1  # image row 0, column 1 of channel 1
    assert out[0, 2, 5, 4] == 200 + 30 + 5
    assert torch.all(out[0, :, :, 7] == 0)  # column 8 of the image does not exist -> padding
    # sample 1, offset (4, 4) = (2 * pad, 2 * pad): shifted up-left by 2, zeros bottom/right
    assert out[1, 0, 0, 0] == 1 + 20 + 2
    assert torch.all(out[1, :, 6:, :] == 0) and torch.all(out[1, :, :, 6:] == 0)
    for b, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[b], reference_crop_flip(img[b], 2, dy, dx, False))
    assert torch.equal(crop_flip(img, 3, torch.tensor([[3, 3], [3, 3]])), img)  # centre = id


def test_flip_reverses_width_and_matches_reference():
    gen = torch.Generator().manual_seed(1)
    img = torch.rand(6, 3, 5, 7, generator=gen)
    flips = torch.tensor([True, False, True, False, True, True])
    out = crop_flip(img, 0, torch.zeros(6, 2, dtype=torch.long), flips)
    assert torch.equal(out[0], img[0].flip(-1)) and torch.equal(out[1], img[1])
    assert out[0, 2, 1, 0] == img[0, 2, 1, 6]
    offsets = torch.randint(0, 5, (6, 2), generator=gen)
    out = crop_flip(img, 2, offsets, flips)
    for b in range(6):
        dy, dx = offsets[b].tolist()
        assert torch.equal(out[b], reference_crop_flip(img[b], 2, dy, dx, bool(flips[b])))


def test_padding_is_black_before_normalization_and_pipeline_is_exact():
    ds = image_dataset(n_train=12, value=255, pad=4, flip=True)  # white images
    data = DeviceData(ds)
    gen = torch.Generator().manual_seed(3)
    replay = torch.Generator()
    replay.set_state(gen.get_state())
    batch = next(data.train_batches(12, gen))
    # replay the documented draw order: permutation, then B x 2 offsets, then B flip bits
    perm = torch.randperm(12, generator=replay)
    offsets = torch.randint(0, 9, (12, 2), generator=replay)
    flips = torch.randint(0, 2, (12,), generator=replay).bool()
    assert torch.equal(batch.idx, perm)
    expected = normalize(crop_flip(to_float(ds.train_x[perm]), 4, offsets, flips),
                         ds.mean, ds.std)
    torch.testing.assert_close(batch.x, expected, rtol=0, atol=0)
    mean, std = torch.tensor(ds.mean), torch.tensor(ds.std)
    black, white = (-mean / std), ((1 - mean) / std)
    values = {round(v, 5) for v in batch.x.unique().tolist()}
    assert values <= {round(v, 5) for v in black.tolist() + white.tolist()}
    # a sample cropped at offset (dy, dx) has |dy - 4| black rows and |dx - 4| black columns
    for b in range(12):
        dy, dx = offsets[b].tolist()
        white_pixels = int((batch.x[b, 0] == white[0]).sum())
        assert white_pixels == (8 - abs(dy - 4)) * (8 - abs(dx - 4))
    assert len(offsets.unique()) > 1 and 0 < int(flips.sum()) < 12


def test_no_flip_for_datasets_that_are_not_mirror_symmetric():
    ds = image_dataset(n_train=8, pad=1, flip=False)
    gen = torch.Generator().manual_seed(5)
    replay = torch.Generator()
    replay.set_state(gen.get_state())
    batch = next(DeviceData(ds).train_batches(8, gen))
    perm = torch.randperm(8, generator=replay)
    offsets = torch.randint(0, 3, (8, 2), generator=replay)
    expected = normalize(crop_flip(to_float(ds.train_x[perm]), 1, offsets), ds.mean, ds.std)
    torch.testing.assert_close(batch.x, expected, rtol=0, atol=0)


def test_augment_batch_offsets_cover_the_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(400, 1, 3, 3)
    x[:, :, 1, 1] = 1.0  # a single lit centre pixel; its position reveals the offset
    out = augment_batch(x, pad=1, flip=False, generator=gen)
    where = out[:, 0].reshape(400, 9).argmax(1)
    lit = out[:, 0].reshape(400, 9).sum(1)
    assert torch.all(lit == 1)  # with pad 1 the centre pixel always stays inside
    counts = torch.bincount(where, minlength=9)
    assert torch.all(counts > 20)  # all 9 offsets occur (about 44 each)
    assert augment_batch(x, 0, False, gen) is x


def test_unaugmented_and_test_batches():
    ds = image_dataset(n_train=9, n_test=7)
    data = DeviceData(ds)
    raw = normalize(to_float(ds.train_x), ds.mean, ds.std)
    for batch in data.train_batches(4, torch.Generator().manual_seed(0), augment=False):
        assert torch.equal(batch.x, raw[batch.idx])
    tests = list(data.test_batches(3))
    assert [b.idx.tolist() for b in tests] == [[0, 1, 2], [3, 4, 5], [6]]
    torch.testing.assert_close(torch.cat([b.x for b in tests]),
                               normalize(to_float(ds.test_x), ds.mean, ds.std))
    assert torch.equal(torch.cat([b.y for b in tests]), ds.test_y)
    assert (data.num_train, data.num_test, data.num_classes) == (9, 7, 3)
    assert data.input_shape == (3, 8, 8)


def test_vector_data_with_posteriors():
    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    post = torch.softmax(torch.arange(30, dtype=torch.float32).reshape(10, 3) / 7, dim=1)
    ds = Dataset("vec", x, torch.arange(10) % 3, x[:4], torch.arange(4) % 3, ["a", "b", "c"],
                 train_posterior=post, test_posterior=post[:4])
    data = DeviceData(ds)
    for batch in data.train_batches(3, torch.Generator().manual_seed(2)):
        assert torch.equal(batch.x, x[batch.idx])  # no statistics: inputs as they are
        assert torch.equal(data.train_posterior[batch.idx], post[batch.idx])


def test_invalid_arguments_are_rejected():
    data = DeviceData(image_dataset())
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.train_batches(0, gen)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        data.train_batches(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"offsets must lie in \[0, 4\]"):
        crop_flip(torch.zeros(1, 1, 4, 4), 2, torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(torch.zeros(2, 3, 4, 4), (0.5,), (0.2,))
    with pytest.raises(ValueError, match="std values must be > 0"):
        normalize(torch.zeros(2, 1, 4, 4), (0.5,), (0.0,))
    with pytest.raises(TypeError, match="dataset must be a kdlib.data.Dataset"):
        DeviceData(torch.zeros(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches():
    ds = image_dataset(n_train=16)
    cpu = list(DeviceData(ds).train_batches(5, torch.Generator().manual_seed(4)))
    gpu = list(DeviceData(ds, "cuda").train_batches(5, torch.Generator().manual_seed(4)))
    for a, b in zip(cpu, gpu, strict=True):
        assert b.x.is_cuda and torch.equal(a.idx, b.idx.cpu())
        torch.testing.assert_close(a.x, b.x.cpu())


def reference_epoch(data, batch_size, gen, drop_single=False):
    """The batches as train_batches drew them one at a time before epoch plans: the
    permutation, then per batch augment_batch's offsets and flips, then normalize."""
    ds = data.dataset
    perm = torch.randperm(data.num_train, generator=gen)
    stop = data.steps_per_epoch(batch_size, drop_single=drop_single) * batch_size
    out = []
    for start in range(0, min(stop, data.num_train), batch_size):
        idx = perm[start:start + batch_size]
        x = augment_batch(to_float(data.train_x[idx]), ds.pad, ds.flip, gen)
        out.append((normalize(x, ds.mean, ds.std), data.train_y[idx], idx))
    return out


@pytest.mark.parametrize("n_train, drop_single", [(23, False), (21, True), (20, False)])
def test_epoch_plan_draws_the_same_batches_as_one_batch_at_a_time(n_train, drop_single):
    data = DeviceData(image_dataset(n_train=n_train))
    for epoch_seed in (0, 1):
        gen_a = torch.Generator().manual_seed(epoch_seed)
        gen_b = torch.Generator().manual_seed(epoch_seed)
        for _ in range(2):  # two consecutive epochs: the generators stay in step
            plan = data.epoch_plan(5, gen_a, drop_single=drop_single)
            ref = reference_epoch(data, 5, gen_b, drop_single)
            assert len(plan) == len(ref) == data.steps_per_epoch(5, drop_single=drop_single)
            for b, (x, y, idx) in zip(plan, ref, strict=True):
                assert torch.equal(b.idx, idx) and torch.equal(b.y, y)
                assert torch.equal(b.x, x)  # bit for bit
            assert torch.equal(gen_a.get_state(), gen_b.get_state())
    cl = data.epoch_plan(5, torch.Generator().manual_seed(0), channels_last=True)[0].x
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl, data.epoch_plan(5, torch.Generator().manual_seed(0))[0].x)
    # the test split in the same format on request, the same values
    plain = list(data.test_batches(4))
    for b, c in zip(plain, data.test_batches(4, channels_last=True), strict=True):
        assert c.x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(b.x, c.x) and torch.equal(b.y, c.y)
    assert plain[0].x.is_contiguous()
    with pytest.raises(TypeError, match="channels_last must be True or False"):
        data.test_batches(4, channels_last=1)


def test_mean_and_std_are_checked_once_at_construction():
    with pytest.raises(ValueError, match="std values must be > 0"):
        DeviceData(dataclasses.replace(image_dataset(), std=(0.5, 0.0, 1.0)))
    with pytest.raises(ValueError, match="one value per channel"):
        DeviceData(dataclasses.replace(image_dataset(), mean=(0.5,), std=(0.5,)))
    with pytest.raises(ValueError, match="both be given"):
        DeviceData(dataclasses.replace(image_dataset(), std=None))
