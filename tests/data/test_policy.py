"""cifar_lab.data.policy: per-image TrivialAugment-Wide / RandAugment draws that match torchvision's ops."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import RandAugment, TrivialAugmentWide

from cifar_lab.data.policy import (
    _RANDAUGMENT,
    _TRIVIALAUGMENT_WIDE,
    NUM_BINS,
    POLICIES,
    _apply_draw,
    _draw,
    _magnitude,
    apply_policy,
)
from cifar_lab.errors import ConfigError

TORCHVISION = {"trivialaugment": TrivialAugmentWide, "randaugment": RandAugment}
OURS = {"trivialaugment": _TRIVIALAUGMENT_WIDE, "randaugment": _RANDAUGMENT}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the groups are tiny tensors, and with a core busy elsewhere two threads' barriers
    make each op ~100x slower (seconds per test instead of milliseconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_images(n: int, seed: int = 0, low: int = 0, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def torchvision_magnitude(policy: str, op: int, bin: int, negative: bool) -> tuple[str, float]:
    """The op name and magnitude torchvision's forward() would use for this draw on a 32x32 image."""
    space = TORCHVISION[policy]._AUGMENTATION_SPACE
    name = list(space)[op]
    magnitudes_fn, signed = space[name]
    magnitudes = magnitudes_fn(NUM_BINS, 32, 32)
    if magnitudes is None:
        return name, 0.0
    magnitude = float(magnitudes[bin])
    return name, -magnitude if signed and negative else magnitude


def distinct(images: torch.Tensor) -> int:
    return torch.unique(images.flatten(1), dim=0).shape[0]


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_tables_are_torchvisions(policy: str) -> None:
    """Same op set in the same order, same signedness, same magnitudes (values and dtype) per bin."""
    ours, theirs = OURS[policy], TORCHVISION[policy]._AUGMENTATION_SPACE
    assert list(ours) == list(theirs)
    for name, (magnitudes, signed) in ours.items():
        their_magnitudes, their_signed = theirs[name]
        assert signed == their_signed, name
        mine, expected = magnitudes(24, 40), their_magnitudes(NUM_BINS, 24, 40)
        if expected is None:
            assert mine is None, name
        else:
            assert torch.equal(mine, expected) and mine.dtype == expected.dtype, name


def test_each_image_gets_its_own_op() -> None:
    """Copies of one image come out different; torchvision's v2 transform gives the whole batch one op."""
    batch = random_images(1, low=40, high=200).expand(200, -1, -1, -1).contiguous()
    out = apply_policy(batch, "trivialaugment", torch.Generator().manual_seed(0))
    assert distinct(out) > 10
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # why this module exists: https://github.com/pytorch/vision/issues/8484
        assert distinct(TrivialAugmentWide()(batch)) == 1


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_each_image_equals_torchvision_on_it_alone(policy: str) -> None:
    """Image i of the batch == its drawn ops applied to image i alone, by our dispatch and by torchvision's."""
    images = random_images(256, seed=1, low=30, high=220)  # low contrast: autocontrast/equalize do something
    out = apply_policy(images, policy, torch.Generator().manual_seed(7))
    draws = _draw(len(images), policy, torch.Generator().manual_seed(7))
    assert set(draws.op.flatten().tolist()) == set(range(len(OURS[policy])))  # every op was exercised
    transform = TORCHVISION[policy]()
    for i in range(len(images)):
        ours, theirs = images[i], images[i]
        for op, bin, negative in zip(draws.op[:, i].tolist(), draws.bin[:, i].tolist(), draws.negative[:, i].tolist()):
            ours = _apply_draw(ours, policy, op, bin, negative)
            name, magnitude = torchvision_magnitude(policy, op, bin, negative)
            assert _magnitude(policy, op, bin, negative, 32, 32) == (name, magnitude)
            theirs = transform._apply_image_or_video_transform(
                theirs, name, magnitude, interpolation=transform.interpolation, fill=transform._fill
            )
        assert torch.equal(out[i], ours), i
        assert torch.equal(out[i], theirs), i


def test_randaugment_applies_num_ops_rounds_in_sequence() -> None:
    images = random_images(128, seed=2)
    gen = torch.Generator().manual_seed(3)
    out = apply_policy(images, "randaugment", gen, num_ops=2, magnitude=15)
    draws = _draw(len(images), "randaugment", torch.Generator().manual_seed(3), num_ops=2, magnitude=15)
    assert draws.op.shape == (2, len(images))
    one_round = images.clone()
    for i in range(len(images)):
        first = _apply_draw(images[i], "randaugment", *(t[0, i].item() for t in draws))
        second = _apply_draw(first, "randaugment", *(t[1, i].item() for t in draws))
        assert torch.equal(out[i], second), i
        one_round[i] = first
    assert not torch.equal(out, one_round)  # the second round changed some images
    with pytest.raises(ConfigError, match=r"data.policy_ops=0 must be a whole number >= 1"):
        apply_policy(images, "randaugment", gen, num_ops=0)  # the config check's rule


def test_seeded_and_leaves_the_global_rng_alone() -> None:
    images = random_images(64, seed=4)
    for policy in ("trivialaugment", "randaugment"):
        state = torch.get_rng_state()
        first = apply_policy(images, policy, torch.Generator().manual_seed(5))
        again = apply_policy(images, policy, torch.Generator().manual_seed(5))
        other = apply_policy(images, policy, torch.Generator().manual_seed(6))
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(first, again)
        assert not torch.equal(first, other)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", POLICIES)
def test_dtype_shape_device_kept(policy: str, device: str) -> None:
    images = random_images(64, seed=8).to(device)
    before = images.clone()
    out = apply_policy(images, policy, torch.Generator(device=device).manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    assert torch.equal(images, before)  # the input is not modified
    if policy == "none":
        assert torch.equal(out, images)
    else:
        assert not torch.equal(out, images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_torchvision_per_image() -> None:
    """On the GPU each image still equals torchvision's op on it alone (on the same device)."""
    images = random_images(128, seed=9, low=30, high=220).cuda()
    out = apply_policy(images, "trivialaugment", torch.Generator(device="cuda").manual_seed(1))
    draws = _draw(len(images), "trivialaugment", torch.Generator(device="cuda").manual_seed(1))
    for i in range(len(images)):
        op, bin, negative = (t[0, i].item() for t in draws)
        assert torch.equal(out[i], _apply_draw(images[i], "trivialaugment", op, bin, negative)), i


def test_unknown_policy_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        apply_policy(random_images(2), "autoaugment", torch.Generator())
    message = str(info.value)
    assert message == "data.policy='autoaugment' is not one of: none, trivialaugment, randaugment"
    assert "\n" not in message


def test_geometric_ops_fill_with_zeros() -> None:
    """torchvision's fill=None: pixels moved in from outside the image are 0 (black)."""
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    names = list(_TRIVIALAUGMENT_WIDE)
    gone = _apply_draw(white, "trivialaugment", names.index("TranslateX"), NUM_BINS - 1, False)  # 32 px: all out
    assert int(gone.max()) == 0
    rotated = _apply_draw(white, "trivialaugment", names.index("Rotate"), NUM_BINS - 1, True)  # -135 degrees
    assert int(rotated[..., 0, 0].max()) == 0 and int(rotated[..., 16, 16].min()) == 255


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_draws_are_uniform_over_the_op_table(policy: str) -> None:
    n = 2800
    draws = _draw(n, policy, torch.Generator().manual_seed(11), num_ops=1, magnitude=9)
    names = list(OURS[policy])
    counts = torch.bincount(draws.op.flatten(), minlength=len(names))
    expected = n / len(names)
    assert ((counts > 0.5 * expected) & (counts < 1.5 * expected)).all(), counts.tolist()
    takes_magnitude = torch.tensor([name not in ("Identity", "AutoContrast", "Equalize") for name in names])[draws.op]
    bins = draws.bin[takes_magnitude]
    if policy == "trivialaugment":
        bin_counts = torch.bincount(bins, minlength=NUM_BINS)
        assert len(bin_counts) == NUM_BINS and (bin_counts > 0.5 * len(bins) / NUM_BINS).all(), bin_counts.tolist()
    else:
        assert (bins == 9).all()
    assert (draws.bin[~takes_magnitude] == 0).all()
    signed = torch.tensor([OURS[policy][name][1] for name in names])[draws.op]
    assert not draws.negative[~signed].any()
    negative_share = draws.negative[signed & (draws.bin > 0)].float().mean().item()
    assert 0.45 < negative_share < 0.55
