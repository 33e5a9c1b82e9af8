"""eval (metrics of a checkpoint), predict (user images), and the test-end TensorBoard figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifar_lab.data.sources import SyntheticSource
from cifar_lab.tasks import cli
from cifar_lab.tasks.eval import evaluate
from cifar_lab.tasks.predict import predict_files
from cifar_lab.training.callbacks import TestPredictions
from cifar_lab.training.metrics import per_class_accuracy, test_report
from tests.conftest import REPO_ROOT, compose_config


def _job(sweep: Path, seed: int, lr: str = "0.05") -> Path:
    """The job folder of the small multirun with this seed and learning rate."""
    for job in sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir()):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        if f"- seed={seed}\n" in overrides and f"- optimizer.lr={lr}\n" in overrides:
            return job
    raise AssertionError(f"no job with seed={seed} lr={lr}")


def _tensorboard(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


# -- the callback ------------------------------------------------------------------------------
@pytest.mark.parametrize("lr", ["0.01", "0.05"])
def test_training_logs_confusion_matrix_and_mistakes_at_test_end(small_multirun, lr):
    job = _job(small_multirun, 0, lr)
    tags = _tensorboard(job / "tensorboard").Tags()["images"]
    assert "test/confusion_matrix" in tags
    perfect = json.loads((job / "metrics.json").read_text())["test/acc"] == 1.0
    assert ("test/most_confident_mistakes" in tags) != perfect  # a grid whenever there are mistakes


def test_callback_keeps_only_the_most_confident_mistakes():
    callback = TestPredictions(num_misclassified=2, log_figures=False)
    logits = torch.tensor([[5.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 9.0]])
    labels = torch.tensor([1, 1, 1, 0])  # rows 0, 2, 3 are wrong; confidence 3 > 0 > 2
    for rows in ((0, 1), (2, 3)):
        callback._keep_worst(torch.zeros(2, 3, 4, 4), logits[list(rows)].softmax(-1), labels[list(rows)])
    images, true, predicted, confidence = callback.misclassified()
    assert true.tolist() == [0, 1] and predicted.tolist() == [1, 0]
    assert confidence[0] > confidence[1] > 0.9
    report = test_report(num_classes=2)
    report.update(logits.softmax(-1), labels)
    values = report.compute()
    assert values["confusion_matrix"].tolist() == [[0, 1], [2, 1]]  # counts[true, predicted]
    assert per_class_accuracy(values, ["a", "b"]) == {"a": 0.0, "b": pytest.approx(1 / 3)}


# -- eval ----------------------------------------------------------------------------------------
@pytest.mark.floors
def test_eval_reproduces_the_training_test_score(small_multirun, tmp_path):
    job = _job(small_multirun, 1)
    ckpt = next((job / "checkpoints").glob("epoch*.ckpt"))  # test_ckpt=best scored this one
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifar_lab.tasks.eval",
            f"ckpt_path={ckpt}",
            "data=synthetic",
            "trainer=cpu",
            "seed=1",
            f"hydra.run.dir={out}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    trained = json.loads((job / "metrics.json").read_text())
    assert metrics["kind"] == "eval" and metrics["tta_level"] == 0
    assert metrics["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert metrics["test/auroc"] == pytest.approx(trained["test/auroc"], abs=1e-5)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == metrics["num_test"] == 200
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["test/acc"], abs=1e-6)
    per_class = metrics["test/acc_per_class"]
    assert list(per_class) == [f"class_{i}" for i in range(10)]
    assert np.mean(list(per_class.values())) == pytest.approx(metrics["test/acc"], abs=1e-6)  # 20 per class
    assert 0.0 <= metrics["test/ece"] <= 1.0
    assert (out / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    events = _tensorboard(out / "tensorboard")
    assert "test/ece" in events.Tags()["scalars"] and "test/acc_class/class_0" in events.Tags()["scalars"]
    assert "test/confusion_matrix" in events.Tags()["images"]


def test_eval_with_tta_in_process(small_multirun, tmp_path):
    ckpt = _job(small_multirun, 0) / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        [
            f"ckpt_path={ckpt}",
            "data=synthetic",
            "trainer=cpu",
            "logger=csv",
            "module.tta_level=1",
            "+trainer.enable_progress_bar=false",
        ],
        tmp_path,
        config_name="eval",
    )
    summary = evaluate(cfg)
    assert summary["tta_level"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] == pytest.approx(summary["test/acc"])


def test_eval_without_ckpt_path_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "eval.py", "data=synthetic"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: ckpt_path is required: python eval.py ckpt_path=PATH/TO/checkpoint.ckpt"
    ]


def test_eval_of_folder_data_without_a_path_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "eval.py",
            f"ckpt_path={tmp_path / 'run.ckpt'}",
            "data=folder",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data=folder needs a path: add data.path=PATH (a folder or .tar/.tar.gz/.zip with train/<class>/ and test/<class>/)"
    ]


def _ece(probs: torch.Tensor, labels: torch.Tensor, bins: int) -> float:
    report = test_report(num_classes=probs.shape[1], ece_bins=bins)
    report.update(probs, labels)
    return float(report.compute()["ece"])


def test_expected_calibration_error_by_hand():
    probs = torch.tensor([[0.95, 0.05], [0.85, 0.15], [0.25, 0.75], [0.35, 0.65]])
    labels = torch.tensor([0, 1, 1, 1])
    # 2 bins: (0.5, 1] holds all four: confidences 0.95 0.85 0.75 0.65 (mean 0.8), correct
    # 1 0 1 1 (mean 0.75) -> 0.05. 10 bins: each sample alone -> mean |confidence - correct|
    assert _ece(probs, labels, bins=2) == pytest.approx(0.05, abs=1e-6)
    assert _ece(probs, labels, bins=10) == pytest.approx((0.05 + 0.85 + 0.25 + 0.35) / 4, abs=1e-6)


def test_per_class_accuracy_is_none_for_a_class_without_test_images():
    report = test_report(num_classes=3)
    report.update(torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]), torch.tensor([0, 0]))
    assert per_class_accuracy(report.compute(), ["a", "b", "c"]) == {"a": 0.5, "b": None, "c": None}


# -- predict -------------------------------------------------------------------------------------
def _test_images(folder: Path, seed: int, per_class: int = 2) -> list[tuple[Path, int]]:
    """Synthetic test images of the run's seed as image files: 32x32 PNG and upscaled JPEG."""
    arrays = SyntheticSource(seed=seed).load()
    files = []
    for label in range(10):
        for k, index in enumerate(np.flatnonzero(arrays.test_labels == label)[:per_class]):
            image = Image.fromarray(arrays.test_images[index])
            if k % 2:
                path = folder / f"c{label}_{k}.jpg"
                image.resize((96, 80), Image.Resampling.NEAREST).save(path, quality=95)
            else:
                path = folder / f"c{label}_{k}.png"
                image.save(path)
            files.append((path, label))
    return files


@pytest.mark.floors
def test_predict_classifies_image_files_of_any_size(small_multirun, tmp_path, capsys):
    ckpt = _job(small_multirun, 0) / "checkpoints" / "last.ckpt"
    files = _test_images(tmp_path, seed=0)
    Image.new("LA", (7, 300)).save(tmp_path / "odd.png")  # grey + alpha, tall: converted and resized
    predictions = predict_files(ckpt, [p for p, _ in files] + [tmp_path / "odd.png"], top_k=3)
    classes = [f"class_{i}" for i in range(10)]
    assert all(len(p.top) == 3 and p.top[0][1] >= p.top[1][1] >= p.top[2][1] for p in predictions)
    assert all(name in classes and 0.0 <= prob <= 1.0 for p in predictions for name, prob in p.top)
    hits = sum(p.top[0][0] == f"class_{label}" for p, (_, label) in zip(predictions, files))
    assert hits / len(files) >= 0.6  # the run reaches ~0.9 test accuracy; chance is 0.1

    assert cli.main(["predict", "--ckpt", str(ckpt), str(files[0][0])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(files[0][0])) and line.split("\t")[1].split()[0] in classes


def test_predict_console_script(small_multirun, tmp_path):
    ckpt = _job(small_multirun, 1) / "checkpoints" / "last.ckpt"
    ((path, _),) = _test_images(tmp_path, seed=1, per_class=1)[:1]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cifar-lab")), "predict", "--ckpt", str(ckpt), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    name, probability = result.stdout.strip().split("\t")[1].split()
    assert name.startswith("class_") and 0.0 < float(probability) <= 1.0


@pytest.mark.parametrize("case", ["missing_ckpt", "text_ckpt", "foreign_ckpt", "missing_image", "broken_image"])
def test_predict_bad_input_is_one_line_and_exit_2(small_multirun, tmp_path, capsys, case):
    ckpt = _job(small_multirun, 0) / "checkpoints" / "last.ckpt"
    image = tmp_path / "ok.png"
    Image.new("RGB", (32, 32)).save(image)
    if case == "missing_ckpt":
        ckpt = tmp_path / "none.ckpt"
    elif case == "text_ckpt":
        ckpt = tmp_path / "notes.ckpt"
        ckpt.write_text("not a checkpoint")
    elif case == "foreign_ckpt":
        ckpt = tmp_path / "foreign.ckpt"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, ckpt)
    elif case == "missing_image":
        image = tmp_path / "missing.png"
    else:
        image = tmp_path / "broken.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert cli.main(["predict", "--ckpt", str(ckpt), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
