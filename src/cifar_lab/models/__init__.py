"""Model zoo: every model maps (B, 3, 32, 32) normalized images to (B, num_classes) logits.

Each constructor takes ``num_classes`` (required: the trainer passes the data's class count)
plus its family's hyperparameters, and raises ConfigError on invalid ones. The Hydra configs
under conf/model/ are partials: ``instantiate(cfg.model)(num_classes=K)``. ``timm_model`` builds
any timm architecture (the optional ``[timm]`` extra, imported only when it is called).
"""

from cifar_lab.models.fast import FastNet
from cifar_lab.models.resnet import ResNet18
from cifar_lab.models.seed_cnn import SeedCNN
from cifar_lab.models.timm_net import timm_model
from cifar_lab.models.vgg import VGG16
from cifar_lab.models.wide_resnet import WideResNet

__all__ = ["FastNet", "ResNet18", "SeedCNN", "VGG16", "WideResNet", "timm_model"]
