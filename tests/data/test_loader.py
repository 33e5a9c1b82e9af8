"""The in-memory device loader and its batch augmentations."""

import numpy as np
import pytest
import torch

from cifar_lab.data import augment
from cifar_lab.data.loader import AugmentSpec, DeviceLoader, normalize
from cifar_lab.data.split import stratified_split
from cifar_lab.errors import ConfigError


def _images(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_flip_mirrors_exactly_the_masked_images():
    images = _images(6)
    mask = torch.tensor([True, False, True, False, False, True])
    out = augment.flip(images, mask)
    assert torch.equal(out[mask], images[mask].flip(-1))
    assert torch.equal(out[~mask], images[~mask])


def _window_offsets(out: torch.Tensor, sources: torch.Tensor) -> set[tuple[int, int]]:
    """Where each out[i] sits inside sources[i] (asserting it is a window of it at all)."""
    size, span = out.shape[-1], sources.shape[-1] - out.shape[-1] + 1
    seen = set()
    for i in range(len(out)):
        found = [
            (y, x)
            for y in range(span)
            for x in range(span)
            if torch.equal(out[i], sources[i, :, y : y + size, x : x + size])
        ]
        assert found, f"image {i} is not a window of its source"
        seen.update(found)
    return seen


def test_translate_is_a_shifted_crop_of_the_reflect_padded_image():
    images = _images(200)
    out = augment.translate(images, 2, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    assert len(_window_offsets(out, padded)) == 25  # every offset drawn over 200 images


def test_translate_with_zero_padding_is_a_shifted_crop_of_the_zero_padded_image():
    images = _images(200) + 5.0  # no zeros of their own: every zero is padding
    out = augment.translate(images, 2, torch.Generator().manual_seed(1), padding="zeros")
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    assert len(_window_offsets(out, padded)) == 25
    # a shifted image shows padding (zeros) on the side it moved away from, never mirrored pixels
    shifted = (out == 0).flatten(1).any(1)
    assert 0.9 < shifted.float().mean() < 1.0  # all but the ~1/25 drawn unshifted
    assert not (augment.translate(images, 2, torch.Generator().manual_seed(1)) == 0).any()  # reflect: no zeros


def test_translate_zero_is_identity():
    images = _images(4)
    assert augment.translate(images, 0, torch.Generator()) is images


def test_cutout_zeroes_one_whole_square_inside_every_image_as_airbench96():
    images = torch.ones(400, 3, 16, 16)
    out = augment.cutout(images, 4, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(dim=1)  # (N, H, W): all channels zeroed together
    assert (zeroed.flatten(1).sum(1) == 16).all()  # never clipped at the border
    rows, cols = zeroed.any(2), zeroed.any(1)  # (N, H), (N, W): the square's rows and columns
    assert (rows.sum(1) == 4).all() and (cols.sum(1) == 4).all()
    tops = rows.float().argmax(1)
    assert set(tops.tolist()) == set(range(16 - 4 + 1))  # every inside position is drawn
    assert torch.equal(out[~(out == 0)], images[~(out == 0)])


def test_clipped_cutout_centres_anywhere_and_clips_at_the_border_as_the_cutout_paper():
    images = torch.ones(2000, 3, 16, 16)
    out = augment.cutout(images, 4, torch.Generator().manual_seed(0), mode="clipped")
    zeroed = (out == 0).all(dim=1)
    counts = zeroed.flatten(1).sum(1)
    assert counts.max() == 16 and counts.min() == 4  # whole inside, down to a 2x2 corner
    rows, cols = zeroed.any(2), zeroed.any(1)
    # a rectangle: as many zeros as its rows x columns
    assert torch.equal(counts, rows.sum(1) * cols.sum(1))
    # centre uniform over all 16 rows: the square's rows start anywhere from -2 to 13
    assert rows[:, 0].float().mean() == pytest.approx(3 / 16, abs=0.04)  # centres 0, 1, 2 cover row 0
    # a larger cutout than the image is allowed when clipped (it can only ever hide part of it)
    AugmentSpec(cutout=40, cutout_mode="clipped").crop_sizes(32)


def test_cutout_larger_than_the_training_crop_fails_at_setup():
    AugmentSpec(cutout=28, crop=28, crop_epochs=1).crop_sizes(32)  # fits the 28-px crop
    with pytest.raises(ConfigError, match=r"data.cutout=29 is larger than the 28px training images"):
        AugmentSpec(cutout=29, crop=28, crop_epochs=1).crop_sizes(32)
    with pytest.raises(ConfigError, match=r"data.cutout=33 is larger than the 32px"):
        AugmentSpec(cutout=33).crop_sizes(32)


def test_normalize_gives_nchw_standardized_floats():
    raw = torch.randint(0, 256, (10, 4, 4, 3), dtype=torch.uint8)
    mean = raw.permute(3, 0, 1, 2).reshape(3, -1).float().div(255).mean(1)
    std = raw.permute(3, 0, 1, 2).reshape(3, -1).float().div(255).std(1)
    out = normalize(raw, mean, std)
    assert out.shape == (10, 3, 4, 4) and out.dtype == torch.float32
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out[3, 1, 2, 0], (raw[3, 2, 0, 1] / 255 - mean[1]) / std[1])


def test_loader_covers_every_sample_once_per_epoch_in_a_new_order():
    labels = torch.arange(100)
    loader = DeviceLoader(_images(100), labels, 32, shuffle=True, drop_last=False, seed=3)
    assert len(loader) == 4
    epoch0 = torch.cat([y for _, y in loader])
    epoch1 = torch.cat([y for _, y in loader])
    assert sorted(epoch0.tolist()) == list(range(100)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)


def test_loader_without_reshuffle_repeats_one_shuffled_order():
    labels = torch.arange(100)
    loader = DeviceLoader(_images(100), labels, 32, shuffle=True, reshuffle=False, seed=3)
    epochs = [torch.cat([y for _, y in loader]) for _ in range(3)]
    assert sorted(epochs[0].tolist()) == list(range(100))
    assert not torch.equal(epochs[0], labels)  # shuffled, not the stored order
    assert torch.equal(epochs[0], epochs[1]) and torch.equal(epochs[0], epochs[2])


def test_loader_drop_last_and_images_follow_labels():
    images = torch.arange(70, dtype=torch.float32).view(70, 1, 1, 1).expand(70, 3, 4, 4).contiguous()
    loader = DeviceLoader(images, torch.arange(70), 32, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    for x, y in batches:
        assert torch.equal(x[:, 0, 0, 0].long(), y)


def test_epoch_is_replayable_from_seed_and_epoch_alone():
    """Resuming at epoch e must see the same order and augmentation as an unbroken run."""
    spec = AugmentSpec(flip="random", translate=2, cutout=3)
    images, labels = _images(64), torch.arange(64)
    unbroken = DeviceLoader(images, labels, 16, shuffle=True, augment_spec=spec, seed=5)
    next(iter(unbroken))  # epoch 0
    epoch1 = [b for b in unbroken]
    resumed = DeviceLoader(images, labels, 16, shuffle=True, augment_spec=spec, seed=5, epoch_fn=lambda: 1)
    for (xa, ya), (xb, yb) in zip(epoch1, resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_alternating_flip_mirrors_complementary_halves():
    images = _images(40)
    loader = DeviceLoader(images, torch.arange(40), 40, augment_spec=AugmentSpec(flip="alternating"))
    even = loader.augmented(0, torch.Generator())
    odd = loader.augmented(1, torch.Generator())
    flipped_even = (even != images).flatten(1).any(1)
    flipped_odd = (odd != images).flatten(1).any(1)
    assert torch.equal(flipped_even, ~flipped_odd)
    assert 10 < flipped_even.sum() < 30


def test_ranks_get_disjoint_shards_covering_the_epoch():
    images, labels = _images(100), torch.arange(100)
    shards = [
        torch.cat([y for _, y in DeviceLoader(images, labels, 10, shuffle=True, seed=1, rank=r, world_size=2)])
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 50
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(100))


def test_the_epoch_order_that_shards_split_is_drawn_on_the_cpu_whatever_the_images_device():
    """Ranks on GPUs of two models must cut one permutation: it comes from a CPU generator of
    (seed, epoch), never from the device's (whose RNG kernels differ by GPU model). Images on the
    meta device stand for a GPU: the order is the CPU one, and the shards partition it."""
    labels = torch.arange(101)

    def loader(device: str, rank: int = 0, world_size: int = 1, **kwargs) -> DeviceLoader:
        images = torch.zeros(101, 3, 4, 4, device=device)
        return DeviceLoader(
            images, labels.to(device), 10, shuffle=True, seed=3, rank=rank, world_size=world_size, **kwargs
        )

    on_cpu, elsewhere = loader("cpu").epoch_permutation(2), loader("meta").epoch_permutation(2)
    assert elsewhere.device.type == "cpu" and torch.equal(on_cpu, elsewhere)
    assert not torch.equal(on_cpu, loader("cpu").epoch_permutation(3))  # a new order each epoch
    shards = [loader("meta", rank, 3).epoch_order(2) for rank in range(3)]
    assert all(shard.device.type == "meta" and len(shard) == 33 for shard in shards)
    cpu_shards = [loader("cpu", rank, 3).epoch_order(2) for rank in range(3)]
    assert torch.equal(torch.stack(cpu_shards, 1).flatten(), on_cpu[:99])  # order[rank::3], interleaved
    # without reshuffle (debug=overfit): one order, every epoch
    same = loader("cpu", reshuffle=False)
    assert torch.equal(same.epoch_permutation(0), same.epoch_permutation(5))


def test_evaluation_shards_score_every_sample_once_and_training_shards_step_together():
    """every_sample (val/test under DDP): 3 ranks of 10 images get 4, 3 and 3 of them, all 10
    once. Training shards are equal (3 each): every rank must take the same number of steps."""
    images, labels = _images(10), torch.arange(10)

    def shard(rank: int, **kwargs) -> list[int]:
        loader = DeviceLoader(images, labels, 2, rank=rank, world_size=3, **kwargs)
        return torch.cat([y for _, y in loader]).tolist()

    scored = [shard(r, every_sample=True) for r in range(3)]
    assert [len(s) for s in scored] == [4, 3, 3] and sorted(sum(scored, [])) == list(range(10))
    trained = [shard(r, shuffle=True) for r in range(3)]
    assert [len(s) for s in trained] == [3, 3, 3] and len(set(sum(trained, []))) == 9


def test_crop_epochs_train_on_random_windows_inside_the_image_then_full_size():
    images = _images(200)
    spec = AugmentSpec(translate=2, crop=4, crop_epochs=2)
    loader = DeviceLoader(images, torch.arange(200), 50, augment_spec=spec)
    for epoch in (0, 1):
        out = loader.augmented(epoch, torch.Generator().manual_seed(epoch))
        assert out.shape == (200, 3, 4, 4) and out.is_contiguous()
        # translate by up to 2, then the central window: a crop anywhere in the original
        # image (never reaching the reflect padding), at all 5 x 5 positions
        assert len(_window_offsets(out, images)) == 25
    assert loader.augmented(2, torch.Generator()).shape == (200, 3, 8, 8)
    shapes = [x.shape[-1] for x, _ in (next(iter(loader)) for _ in range(3))]
    assert shapes == [4, 4, 8]  # the loader's own epochs 0, 1, 2


def test_crop_stages_run_in_order_each_a_window_of_the_image():
    images = _images(100)
    spec = AugmentSpec(translate=1, crop=[4, 6], crop_epochs=[1, 2])
    assert spec.stages == ((4, 1), (6, 2)) and spec.crop_sizes(8) == [4, 6]
    loader = DeviceLoader(images, torch.arange(100), 50, augment_spec=spec)
    sizes = []
    for epoch in range(5):
        out = loader.augmented(epoch, torch.Generator().manual_seed(epoch))
        sizes.append(out.shape[-1])
        if out.shape[-1] < 8:  # a crop after a 1px translate never reaches the padding
            _window_offsets(out, images)
    assert sizes == [4, 6, 6, 8, 8]


def test_crop_larger_than_the_images_is_one_clear_line():
    loader = DeviceLoader(_images(4), torch.arange(4), 2, augment_spec=AugmentSpec(crop=12, crop_epochs=1))
    with pytest.raises(ConfigError, match=r"data.crop=12 is larger than the 8px images"):
        next(iter(loader))


@pytest.mark.parametrize(
    "bad",
    [
        dict(flip="sideways"),
        dict(translate=-1),
        dict(cutout=1.5),
        dict(crop=-2),
        dict(crop_epochs=3),
        dict(crop=[4, 6], crop_epochs=[1]),
        dict(crop=[4, 0], crop_epochs=[1, 1]),
        dict(crop=[], crop_epochs=[]),
        dict(translate_padding="edge"),
        dict(cutout_mode="centre"),
        dict(policy="autoaugment"),
        dict(policy_ops=0),
        dict(policy_magnitude=31),
    ],
)
def test_bad_augment_spec_is_one_clear_line(bad):
    with pytest.raises(ConfigError) as err:
        AugmentSpec(**bad)
    assert "\n" not in str(err.value) and "data." in str(err.value)


def test_loader_applies_the_per_image_policy_on_the_pixels_the_images_came_from():
    from cifar_lab.data.policy import apply_policy

    pixels = torch.randint(0, 256, (64, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    images = normalize(pixels, mean, std)
    spec = AugmentSpec(policy="trivialaugment")
    loader = DeviceLoader(images, torch.zeros(64), 64, augment_spec=spec, normalization=(mean, std))
    out = loader.augmented(0, loader._generator(0))
    expected = apply_policy(pixels.permute(0, 3, 1, 2), "trivialaugment", loader._generator(0))
    assert torch.allclose(out, normalize(expected.permute(0, 2, 3, 1), mean, std), atol=1e-5)
    assert (out != images).flatten(1).any(1).sum() > 32  # most images changed, each its own way
    with pytest.raises(ValueError, match="normalization"):
        DeviceLoader(images, torch.zeros(64), 64, augment_spec=spec)


def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = np.repeat(np.arange(4), [100, 100, 50, 250])
    train, val = stratified_split(labels, 50, seed=0)
    assert len(val) == 50 and len(train) == 450
    assert set(train).isdisjoint(val)
    assert np.bincount(labels[val]).tolist() == [10, 10, 5, 25]
    assert np.array_equal(val, stratified_split(labels, 50, seed=0)[1])
    assert not np.array_equal(val, stratified_split(labels, 50, seed=1)[1])


def test_split_rejects_val_size_too_large():
    with pytest.raises(ConfigError, match="val_size=10 .* 10 images"):
        stratified_split(np.zeros(10, dtype=np.int64), 10, seed=0)
