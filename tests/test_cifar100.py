"""CIFAR-100's 100 classes end to end, on synthetic data of 100 classes (its download cannot run
here; tests/data/test_sources.py reads a tiny copy through torchvision): a recipe trains a net with a
100-way head, eval's report, figure and log and predict's answers stay usable; offline, data=cifar100
stops with one line."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifar_lab.errors import CifarLabError, DataError
from cifar_lab.runtime.checkpoints.model import load_trained
from cifar_lab.tasks import cli
from cifar_lab.tasks.eval import LISTED_CLASSES, SHOWN_AT_EACH_END, evaluate, per_class_lines
from cifar_lab.tasks.predict import predict_files
from cifar_lab.tasks.train import train
from tests.conftest import compose_config

CLASSES = [f"class_{i}" for i in range(100)]
# synthetic data of 100 classes: 1000 training images, 200 test images (as data=cifar100 has 100
# a class), batches of 100 for 10 steps an epoch, at the speed94 recipe's net 1/16 wide
DATA = [
    "data=synthetic",
    "data.source.num_classes=100",
    "data.source.train_per_class=10",
    "data.source.test_per_class=2",
    "trainer=cpu",
]
RECIPE = ["experiment=speed94", "model.widths=[8,16,16]", "epochs=2", "data.batch_size=100", *DATA]


@pytest.fixture(scope="module")
def run_100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python train.py experiment=speed94 ...` on 100 classes, read-only for the tests."""
    out = tmp_path_factory.mktemp("run_100")
    summary = train(compose_config(RECIPE, out))
    assert summary["status"] == "completed" and summary["steps"] == 20
    return out


def test_a_recipe_trains_a_100_way_head_and_reports_test_accuracy_and_auroc(run_100):
    loaded = load_trained(run_100 / "checkpoints" / "last.ckpt")
    assert loaded.classes == CLASSES
    with torch.inference_mode():
        assert loaded.net.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    metrics = json.loads((run_100 / "metrics.json").read_text())
    # 20 steps of a 1/16-wide net hardly lift 100-way accuracy above chance (0.01), yet they rank
    # the true class higher (AUROC ~0.6); an untrained or mis-wired head scores 0.5 +- ~0.02 here
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/auroc"] > 0.55, metrics
    assert math.isfinite(metrics["test/loss"])


def test_eval_at_100_classes_keeps_every_class_in_json_and_a_short_table_in_the_log(run_100, tmp_path, caplog):
    cfg = compose_config(
        [f"ckpt_path={run_100 / 'checkpoints' / 'last.ckpt'}", *DATA, "logger=tensorboard"],
        tmp_path,
        config_name="eval",
    )
    with caplog.at_level(logging.INFO, logger="cifar_lab.tasks.eval"):
        summary = evaluate(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert sorted(metrics["test/acc_per_class"]) == sorted(CLASSES) and len(metrics["confusion_matrix"]) == 100
    trained = json.loads((run_100 / "metrics.json").read_text())
    assert metrics["num_test"] == 200 and metrics["test/acc"] == pytest.approx(summary["test/acc"])
    assert metrics["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)  # the recipe's TTA, the same net
    assert metrics["test/auroc"] == pytest.approx(trained["test/auroc"], abs=1e-5)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("eval: acc")]
    lines = record.getMessage().splitlines()
    # a header, the 5 worst and 5 best classes, then at most 1 + 5 most frequent mistakes
    assert len(lines) <= 1 + 1 + 2 * SHOWN_AT_EACH_END + 1 + SHOWN_AT_EACH_END, lines
    assert lines[1].startswith("per-class test accuracy (100 classes, mean ")
    assert sum(line.startswith("  worst  ") for line in lines) == SHOWN_AT_EACH_END
    assert all(len(line) < 120 for line in lines)
    with Image.open(tmp_path / "confusion_matrix.png") as figure:
        # every class labelled on a grid that fits a screen or two, not the 5000 px of 0.55 in a class
        assert 1000 < figure.width < 2500 and 1000 < figure.height < 2500, figure.size
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()  # the test-end figures at 100 classes: the matrix and the most confident mistakes
    assert {"test/confusion_matrix", "test/most_confident_mistakes"} <= set(events.Tags()["images"])


def test_per_class_table_lists_every_class_up_to_the_limit_then_the_worst_and_best():
    few = {f"c{i}": i / 10 for i in range(LISTED_CLASSES)}
    assert per_class_lines(few)[1:] == [f"  c{i:<2}  {i / 10:.3f}" for i in range(LISTED_CLASSES)]
    many = {f"c{i}": i / 100 for i in range(100)} | {"empty": None}
    lines = per_class_lines(many, shown=2)
    assert lines == [
        "per-class test accuracy (101 classes, mean 0.495, 1 without test images), the worst and best 2; "
        "all in metrics.json:",
        "  worst  c0   0.000",
        "  worst  c1   0.010",
        "  best   c99  0.990",
        "  best   c98  0.980",
    ]


def test_predict_names_the_100_classes_and_refuses_more_than_there_are(run_100, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (120, 40, 200)).save(image)
    ckpt = run_100 / "checkpoints" / "last.ckpt"
    (prediction,) = predict_files(ckpt, [image], top_k=5)
    assert len(prediction.top) == 5 and all(name in CLASSES for name, _ in prediction.top)
    (every,) = predict_files(ckpt, [image], top_k=100)
    assert sorted(name for name, _ in every.top) == sorted(CLASSES)
    assert sum(p for _, p in every.top) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(CifarLabError, match=r"^--top 101 is more than the checkpoint's 100 classes; use at most 100$"):
        predict_files(ckpt, [image], top_k=101)
    assert cli.main(["predict", "--ckpt", str(ckpt), str(image), "--top", "101"]) == 2
    assert capsys.readouterr().err.startswith("error: --top 101 is more than")


def test_data_cifar100_without_its_files_and_download_off_is_one_line(tmp_path):
    """The real torchvision CIFAR100 on an empty data folder (a user's download that failed or was
    turned off): one line naming CIFAR-100 and the way out, which train.py prints as `error: ...`."""
    cfg = compose_config(
        ["data=cifar100", f"paths.data_dir={tmp_path / 'data'}", "data.source.download=false"], tmp_path
    )
    with pytest.raises(DataError) as excinfo:
        train(cfg)
    message = str(excinfo.value)
    assert message.startswith(f"CIFAR-100 is not in '{tmp_path / 'data'}' (or is corrupt) and download is off; ")
    assert "data=folder data.path=PATH" in message and "\n" not in message


@pytest.mark.parametrize("k", [10, 100])
def test_the_confusion_matrix_writes_its_counts_up_to_20_classes_and_labels_every_class_beyond(k):
    from cifar_lab.runtime.figures import ANNOTATED_CLASSES, confusion_figure

    matrix = torch.eye(k, dtype=torch.long) * 3
    matrix[0, 1] = 1
    classes = [f"class_{i}" for i in range(k)]
    ax = confusion_figure(matrix, classes).axes[0]
    assert [label.get_text() for label in ax.get_yticklabels()] == classes
    if k <= ANNOTATED_CLASSES:
        assert len(ax.texts) == k * k and ax.texts[1].get_text() == "1"  # counts[0, 1]
    else:
        assert len(ax.texts) == 0 and all(label.get_fontsize() <= 6 for label in ax.get_xticklabels())
        assert ax.images[0].norm(0.04) == pytest.approx(0.2)  # square-root scale: a 4% confusion shows
