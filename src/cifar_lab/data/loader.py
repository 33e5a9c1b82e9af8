"""Batches cut from one tensor that already lives on the training device.

This replaces torch's DataLoader for in-memory datasets: no worker processes, no
per-image transforms, no host-to-device copies per step. An epoch's augmentation is
applied to the whole split at once, then batches are index slices of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from cifar_lab.config.data import AUGMENT_OPTIONS, crop_stages, validate_data_options
from cifar_lab.data import augment
from cifar_lab.errors import ConfigError

# the seed offset of the epoch order's stream, apart from the augmentation's (seed, epoch) streams
_ORDER_STREAM = 1 << 40


@dataclass(frozen=True)
class AugmentSpec:
    """What to do to training images each epoch."""

    flip: str = "none"
    translate: int = 0
    # reflect (airbench) | zeros (the papers' RandomCrop(32, padding=4))
    translate_padding: str = "reflect"
    cutout: int = 0
    # inside (airbench96: the square lies fully inside) | clipped (the Cutout paper: centre anywhere)
    cutout_mode: str = "inside"
    # per-image policy: none | trivialaugment | randaugment (cifar_lab.data.policy)
    policy: str = "none"
    # randaugment's ops per image and magnitude bin (of 31): torchvision's defaults
    policy_ops: int = 2
    policy_magnitude: int = 9
    # progressive size: ``crop_epochs`` epochs on crop x crop windows, then full size; both
    # may be lists for several stages (crop=[24, 28], crop_epochs=[6, 4])
    crop: int | Sequence[int] = 0
    crop_epochs: int | Sequence[int] = 0
    stages: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        validate_data_options({key: getattr(self, key) for key in AUGMENT_OPTIONS})
        object.__setattr__(self, "stages", crop_stages(self.crop, self.crop_epochs))

    def _check_fits(self, image_size: int) -> None:
        if self.translate >= image_size:  # reflect padding takes less than the image side
            raise ConfigError(
                f"data.translate={self.translate} is too large for the {image_size}px images: use less than "
                f"{image_size} pixels (airbench: 2)"
            )
        for size, _ in self.stages:
            if size > image_size:  # checked again here for loaders built without a datamodule
                raise ConfigError(
                    f"data.crop={size} is larger than the {image_size}px images: pick a crop below {image_size}, or 0"
                )
        smallest = min(self._cropped_sizes(image_size), default=image_size)
        if (
            self.cutout_mode == "inside" and self.cutout > smallest
        ):  # the square lies fully inside the (cropped) training image
            raise ConfigError(
                f"data.cutout={self.cutout} is larger than the {smallest}px training images: use at most {smallest}"
            )

    def crop_sizes(self, image_size: int) -> list[int]:
        """Every crop side some epoch trains on, smallest first (empty: always full size)."""
        self._check_fits(image_size)
        return self._cropped_sizes(image_size)

    def _cropped_sizes(self, image_size: int) -> list[int]:
        return sorted({size for size, epochs in self.stages if epochs > 0 and 0 < size < image_size})

    def check_model_takes_crops(self, net: torch.nn.Module, image_size: int) -> None:
        """Fail before training, in one line, if ``net`` cannot take a training crop's size."""
        was_training = net.training
        try:
            for crop in self.crop_sizes(image_size):
                try:
                    with torch.no_grad():
                        net.eval()(torch.zeros(2, 3, crop, crop))
                except (RuntimeError, AssertionError) as err:  # timm asserts a fixed input size
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    setting = (
                        f"data.crop={crop}" if len(self.stages) == 1 else f"data.crop={list(self.crop)} (size {crop})"
                    )
                    raise ConfigError(
                        f"{setting} does not fit model {type(net).__name__}: pick a crop size it takes "
                        f"(FastNet: >= 9 at kernel_size 2; a timm ViT: +model.dynamic_img_size=true), "
                        f"or data.crop_epochs=0 ({first})"
                    ) from None
        finally:
            net.train(was_training)

    def crop_size(self, epoch: int, image_size: int) -> int | None:
        """The training crop's side in ``epoch``, or None for full-size images."""
        self._check_fits(image_size)
        end = 0
        for size, epochs in self.stages:
            end += epochs
            if epoch < end:
                return size if 0 < size < image_size else None
        return None


def normalize(images_nhwc: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W), standardized per channel."""
    return standardize(images_nhwc.permute(0, 3, 1, 2), mean, std).contiguous()


def standardize(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32, per channel ``(pixels / 255 - mean) / std``: the one home of
    the arithmetic, which ``to_pixels`` inverts."""
    return pixels.float().div_(255.0).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def to_pixels(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The uint8 (N, C, H, W) pixels that ``standardize`` made ``images`` from (rounded)."""
    return (images * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


class DeviceLoader:
    """Iterates (images, labels) batches of an in-memory split.

    Randomness of epoch ``e`` (order, flips, crops) comes from a generator seeded with
    (seed, e) alone, so any epoch can be replayed exactly, also after a resume. With
    ``world_size > 1`` each rank takes a disjoint slice of the same epoch permutation: of equal
    length for training (ranks step together; the at most world_size-1 left over are skipped),
    or, with ``every_sample`` (evaluation), every sample once, in shards that differ by at most one.

    The loader is *stateful* in Lightning's sense (``state_dict``/``load_state_dict``):
    the checkpoint records (seed, epoch, batches already served), which fixes the shuffling
    and augmentation RNG completely, and a loader restored from it skips the batches of that
    epoch already trained on. That is what makes a resume from a mid-epoch checkpoint
    bitwise equal to a run that was never interrupted.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        reshuffle: bool = True,
        drop_last: bool = False,
        augment_spec: AugmentSpec | None = None,
        seed: int = 0,
        epoch_fn: Callable[[], int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        every_sample: bool = False,
        normalization: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        # False: one shuffled order, the same every epoch (overfitting a few batches that still
        # mix the classes: the sources store images sorted by class)
        self.reshuffle = reshuffle
        self.drop_last = drop_last
        self.augment_spec = augment_spec or AugmentSpec()
        self.seed = seed
        self.epoch_fn = epoch_fn
        self.rank = rank
        self.world_size = world_size
        self.every_sample = every_sample
        # (mean, std) the images were normalized with: a per-image policy works on uint8 pixels
        self.normalization = normalization
        if self.augment_spec.policy != "none" and normalization is None:
            raise ValueError(f"data.policy={self.augment_spec.policy!r} needs the loader's normalization (mean, std)")
        self._own_epoch = 0
        # progress of the iteration in flight (what state_dict() records)
        self._epoch_in_flight: int | None = None
        self._served = 0
        # set by load_state_dict(): (epoch, batches to skip), applied by the next iteration
        self._resume_at: tuple[int, int] | None = None

    @property
    def samples_per_rank(self) -> int:
        """This rank's samples an epoch."""
        n, world_size = len(self.images), self.world_size
        if self.every_sample:
            return len(range(self.rank, n, world_size))
        return n // world_size

    def __len__(self) -> int:
        n = self.samples_per_rank
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _generator(self, epoch: int, device: torch.device | str | None = None) -> torch.Generator:
        gen = torch.Generator(device=self.images.device if device is None else device)
        gen.manual_seed(self.seed * 1_000_003 + epoch)
        return gen

    def _epoch(self) -> int:
        if self.epoch_fn is not None:
            return int(self.epoch_fn())
        epoch, self._own_epoch = self._own_epoch, self._own_epoch + 1
        return epoch

    def augmented(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """The whole split as it looks in ``epoch``."""
        spec = self.augment_spec
        images = self.images
        if spec.policy != "none":
            images = self._policy(images, generator)
        if spec.flip == "random":
            images = augment.flip(images, augment.random_flip_mask(len(images), generator))
        elif spec.flip == "alternating":
            # one fixed random half is mirrored on even epochs, the other half on odd ones
            base = augment.random_flip_mask(len(images), self._generator(-1))
            images = augment.flip(images, base if epoch % 2 == 0 else ~base)
        images = augment.translate(images, spec.translate, generator, spec.translate_padding)
        crop = spec.crop_size(epoch, images.shape[-1])
        if crop is not None:
            # after a translate of up to r pixels the central window is a random crop
            images = augment.center_crop(images, crop)
        return augment.cutout(images, spec.cutout, generator, spec.cutout_mode)

    def _policy(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The per-image policy on the uint8 pixels the normalized images came from."""
        from cifar_lab.data.policy import apply_policy

        mean, std = (t.to(images.device) for t in self.normalization)
        pixels = to_pixels(images, mean, std)
        spec = self.augment_spec
        pixels = apply_policy(pixels, spec.policy, generator, num_ops=spec.policy_ops, magnitude=spec.policy_magnitude)
        return standardize(pixels, mean, std)

    def epoch_permutation(self, epoch: int) -> torch.Tensor:
        """The order of every sample in ``epoch``, on the CPU: the same on every rank by construction.

        Drawn from a CPU generator of (seed, epoch), a stream of its own: CUDA's RNG kernels size
        their grid by the device, so GPUs of two models can draw two permutations from one seed,
        and the ranks' shards (``[rank::world_size]`` of it) would overlap or miss images, silently.
        Augmentation may come from the device's generator: each rank draws it for its own images.
        """
        stream = _ORDER_STREAM + (epoch if self.reshuffle else -2)  # -2: one order for every epoch
        return torch.randperm(len(self.images), generator=self._generator(stream, device="cpu"))

    def epoch_order(self, epoch: int) -> torch.Tensor | None:
        """This rank's sample indices for ``epoch``, on the images' device (None: all samples in order)."""
        n = len(self.images)
        if not self.shuffle and self.world_size == 1:
            return None
        order = self.epoch_permutation(epoch) if self.shuffle else torch.arange(n)
        return order[self.rank :: self.world_size][: self.samples_per_rank].to(self.images.device)

    # -- resumable state (Lightning saves it in the checkpoint's loop state) -----------------
    def state_dict(self) -> dict[str, int]:
        """Where the iteration stands: its RNG is fully defined by (seed, epoch)."""
        epoch = self._epoch_in_flight
        return {
            "seed": int(self.seed),
            "epoch": -1 if epoch is None else int(epoch),
            "batches": int(self._served),
            "batch_size": int(self.batch_size),
            "world_size": int(self.world_size),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration of ``state['epoch']`` skip the batches already served."""
        for key in ("seed", "batch_size", "world_size"):
            if key in state and int(state[key]) != int(getattr(self, key)):
                raise ConfigError(
                    f"the checkpoint's data loader ran with {key}={state[key]}, this run has "
                    f"{key}={getattr(self, key)}: resume with the same settings, or start fresh"
                )
        epoch, batches = int(state.get("epoch", -1)), int(state.get("batches", 0))
        self._resume_at = (epoch, batches) if epoch >= 0 and batches > 0 else None
        if self.epoch_fn is None and epoch >= 0:
            # no trainer to ask: continue the checkpoint's epoch, or start the next one
            self._own_epoch = epoch + 1 if batches >= len(self) else epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: nothing below runs before the first next(), so the epoch is read when
        # the batch is actually wanted (Lightning calls iter() early, before its epoch counter
        # is final on a resume).
        epoch = self._epoch()
        skip = 0
        if self._resume_at is not None:
            resume_epoch, resume_batches = self._resume_at
            self._resume_at = None  # one resume, one skip
            if resume_epoch == epoch:
                skip = min(resume_batches, len(self))
        self._epoch_in_flight, self._served = epoch, skip
        order = self.epoch_order(epoch)
        images = self.augmented(epoch, self._generator(epoch))
        for i in range(skip, len(self)):
            self._served = i + 1
            start, stop = i * self.batch_size, (i + 1) * self.batch_size
            if order is None:
                yield images[start:stop], self.labels[start:stop]
            else:
                idx = order[start:stop]
                yield images[idx], self.labels[idx]
