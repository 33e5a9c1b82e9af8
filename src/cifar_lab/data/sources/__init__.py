"""Data sources: where the images come from, decoded once into uint8 arrays (ImageArrays).

Every source has the same small interface, so the DataModule does not care which one it got:

- ``__init__`` takes plain values (Hydra instantiates it from ``conf/data/source/*.yaml``) and
  does no I/O, so composing a config stays instant;
- ``prepare()`` fetches / decodes / caches; call it once, in one process (Lightning's
  ``prepare_data``);
- ``load()`` returns the ImageArrays quickly (from the cache or the source's own files), and
  prepares first if that was not done.

One module per source (``torchvision_cifar``, ``folder``, ``synthetic``); the folder source's
archive readers (``containers``) and layout parser (``layout``) have their own. The names are
re-exported here because configs (``_target_: cifar_lab.data.sources.ImageFolderSource``),
checkpoints' saved configs and users' code name them so.
"""

from cifar_lab.data.sources.folder import ImageFolderSource, decode_image_folder
from cifar_lab.data.sources.synthetic import SyntheticSource
from cifar_lab.data.sources.torchvision_cifar import TorchvisionCIFAR, TorchvisionCIFAR10

__all__ = ["ImageFolderSource", "SyntheticSource", "TorchvisionCIFAR", "TorchvisionCIFAR10", "decode_image_folder"]
