"""model=timm: any timm architecture from scratch, through the real training, eval and predict paths."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image

pytest.importorskip("timm")  # the [timm] extra (the test extra installs it)

from cifar_lab.errors import ConfigError  # noqa: E402
from cifar_lab.runtime.checkpoints.model import load_trained  # noqa: E402
from cifar_lab.tasks.eval import evaluate  # noqa: E402
from cifar_lab.tasks.predict import predict_files  # noqa: E402
from cifar_lab.tasks.train import train  # noqa: E402
from cifar_lab.training.build import build_datamodule, build_module  # noqa: E402
from cifar_lab.training.optim import param_groups  # noqa: E402
from tests.conftest import QUICK_RUN, REPO_ROOT, compose_config  # noqa: E402

# timm's tiny test architectures: 0.37M (a ResNet) and 0.2M (a ViT) parameters
TINY_RESNET = ["model=timm", "model.name=test_resnet"]
TINY_VIT = ["model=timm", "model.name=test_vit", "+model.img_size=32", "+model.patch_size=4"]
# 200 training images, 20 held out: 6 steps at batch 30
SMALL_DATA = [
    "data.source.train_per_class=20",
    "data.val_size=20",
    "data.batch_size=30",
    "callbacks.test_predictions=null",
]


def test_a_timm_net_trains_and_its_checkpoint_scores_the_same_in_eval_and_predict(make_cfg, tmp_path):
    """Trained by train() with the defaults (channels_last, norm/bias weight-decay grouping), its
    last.ckpt rebuilds the net from the model_config saved in it (with the passed-through
    drop_rate), and eval scores exactly what the training's test pass scored."""
    import timm

    run = tmp_path / "run"
    cfg = make_cfg(*TINY_RESNET, *SMALL_DATA, "+model.drop_rate=0.1", "test_ckpt=last")
    cfg.paths.output_dir = str(run)
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 6  # 180 images, batch 30
    reference = timm.create_model("test_resnet", num_classes=10)
    assert summary["params"] == sum(p.numel() for p in reference.parameters())
    assert 0.0 <= summary["test/auroc"] <= 1.0

    ckpt = run / "checkpoints" / "last.ckpt"
    loaded = load_trained(ckpt)
    assert type(loaded.net) is type(reference) and loaded.net.drop_rate == 0.1
    assert loaded.raw["cifar_lab"]["model_config"]["name"] == "test_resnet"

    scored = evaluate(
        compose_config(
            [
                f"ckpt_path={ckpt}",
                "data=synthetic",
                "data.source.train_per_class=20",
                "trainer=cpu",
                "logger=none",
                "+trainer.enable_progress_bar=false",
            ],
            tmp_path / "eval",
            config_name="eval",
        )
    )
    assert scored["test/acc"] == pytest.approx(summary["test/acc"], abs=1e-6)
    assert scored["test/auroc"] == pytest.approx(summary["test/auroc"], abs=1e-5)

    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    (prediction,) = predict_files(ckpt, [image], top_k=10)
    assert sorted(name for name, _ in prediction.top) == loaded.classes
    assert sum(prob for _, prob in prediction.top) == pytest.approx(1.0, abs=1e-5)


def test_weight_decay_skips_timm_norms_biases_and_a_vits_declared_embeddings(make_cfg):
    """timm's norm layers (LayerNorm in a ViT, LayerNorm2d in a ConvNeXt) and biases take no
    decay; so do what the ViT lists in no_weight_decay() (pos_embed, cls_token)."""
    for overrides in (TINY_VIT, ["model=timm", "model.name=test_convnext"]):
        cfg = make_cfg(*overrides)
        datamodule = build_datamodule(cfg, stage="fit")
        net = build_module(cfg, datamodule).net
        groups = param_groups(net, exclude_norm_and_bias_from_decay=True)
        undecayed = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
        names = {name for name, p in net.named_parameters() if id(p) in undecayed}
        norms = {
            f"{m}.{p}" if m else p
            for m, module in net.named_modules()
            if "Norm" in type(module).__name__ and not list(module.children())
            for p, _ in module.named_parameters(recurse=False)
        }
        assert norms and norms <= names
        assert all(name.endswith(".bias") or name in norms or name in ("pos_embed", "cls_token") for name in names)
        assert {n for n, _ in net.named_parameters() if n.endswith(".bias")} <= names
        if "model.name=test_vit" in overrides:
            assert {"pos_embed", "cls_token"} <= names
        decayed = [name for name, p in net.named_parameters() if id(p) not in undecayed]
        assert decayed and all(not n.endswith(".bias") for n in decayed)


def test_a_fixed_size_vit_refuses_progressive_crops_in_one_line_and_a_dynamic_one_takes_them(make_cfg):
    from cifar_lab.training.build import build_datamodule as data

    def check(*extra):
        cfg = make_cfg(*TINY_VIT, "data.crop=24", "data.crop_epochs=1", *extra)
        datamodule = data(cfg, stage="fit")
        datamodule.augment_spec.check_model_takes_crops(build_module(cfg, datamodule).net, datamodule.image_size)

    with pytest.raises(ConfigError, match=r"data.crop=24 does not fit model VisionTransformer.*dynamic_img_size"):
        check("+model.dynamic_img_size=false")
    check("+model.dynamic_img_size=true")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.name=resnet19"],
            "model.name='resnet19' is not a timm architecture; close matches: resnet18, ",
        ),
        (
            ["model.pretrained=true"],
            "model.pretrained=true is not supported: cifar_lab trains from scratch and downloads no weights; "
            "drop model.pretrained",
        ),
        (["+model.not_an_arg=1"], "timm's resnet18 cannot be built with model.not_an_arg=1: "),
    ],
)
def test_bad_timm_settings_are_one_config_error(make_cfg, overrides, message):
    cfg = make_cfg("model=timm", *overrides)
    with pytest.raises(ConfigError) as err:
        build_module(cfg, build_datamodule(cfg, stage="fit"))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# the models, the optimizer grouping and the training build import no timm; then, with `import timm`
# raising ImportError as in an install without the extra, `python train.py ... model=timm`
WITHOUT_TIMM = (
    "import runpy, sys; import cifar_lab.models, cifar_lab.training.build, cifar_lab.training.optim; "
    "print('timm imported:', 'timm' in sys.modules, flush=True); sys.modules['timm'] = None; "
    "sys.argv = ['train.py'] + sys.argv[1:]; runpy.run_path('train.py', run_name='__main__')"
)


def test_without_the_extra_model_timm_says_what_to_install_and_the_rest_never_imports_timm(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TIMM, *QUICK_RUN, "model=timm", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.startswith("timm imported: False\n"), result.stdout[-2000:]
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "error: model=timm needs the timm extra: pip install 'cifar_lab[timm]'"
    ]


def test_a_timm_vit_at_32x32_maps_images_to_logits(make_cfg):
    cfg = make_cfg(*TINY_VIT)
    datamodule = build_datamodule(cfg, stage="fit")
    net = build_module(cfg, datamodule).net.eval()
    assert net.patch_embed.grid_size == (8, 8)  # patch 4 on 32x32: 64 tokens, not 2x2 of patch 16
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
