"""cifar-lab export: the exported file, run by onnxruntime or torch.jit, predicts what eval scores."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from cifar_lab.recipes.tta import tta_logits
from cifar_lab.runtime.checkpoints.model import load_trained
from cifar_lab.tasks import cli
from cifar_lab.tasks.eval import _scoring_module, _test_data, evaluate
from cifar_lab.tasks.train import train
from tests.conftest import FAST_OVERRIDES, TINY_RUN, compose_config

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SEED = 3
# fp32 everywhere: on a CPU with bf16 the trainer's "auto" precision would score in bf16
DATA = ["data.source.train_per_class=20", f"seed={SEED}", "trainer.precision=32-true"]
TINY_DATA = [o for o in TINY_RUN if not o.startswith("model")]
MODELS = {
    # a whitening layer, EMA weights (what the checkpoint holds) and mirror TTA inside the graph
    "fast": [
        "model=fast",
        "model.widths=[8,16,16]",
        "module.ema_decay=0.9",
        "module.tta_level=1",
        "trainer.limit_train_batches=3",
    ],
    # a large model at a small width (>= 8: oneDNN crashes at width 4), two steps
    "resnet18": ["model=resnet18", "model.width=8", "trainer.limit_train_batches=2"],
}
# |logit| agreement of the exported file with eval: fp32 on both sides, different kernels
LOGIT_ATOL = 1e-4


@dataclass
class Scored:
    """A trained checkpoint, eval's result on its test split, and the raw NCHW test images."""

    ckpt: Path
    summary: dict
    logits: np.ndarray
    labels: np.ndarray
    images: np.ndarray


def _train_and_score(name: str, tmp_path_factory: pytest.TempPathFactory) -> Scored:
    """Train the model in-process, then score last.ckpt with eval (its metrics and its logits)."""
    run_dir = tmp_path_factory.mktemp(f"train_{name}")
    train(compose_config([*FAST_OVERRIDES, *TINY_DATA, *DATA, "logger=none", *MODELS[name]], run_dir))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    eval_dir = tmp_path_factory.mktemp(f"eval_{name}")
    overrides = [f"ckpt_path={ckpt}", "data=synthetic", "trainer=cpu", "logger=none", *DATA]
    cfg = compose_config([*overrides, "+trainer.enable_progress_bar=false"], eval_dir, config_name="eval")
    summary = evaluate(cfg)
    # eval's logits, sample by sample: its scoring module and test data, its test step's TTA
    loaded = load_trained(ckpt)
    module, datamodule = _scoring_module(cfg, loaded).eval(), _test_data(cfg, loaded, ckpt)
    with torch.no_grad():
        batches = [(tta_logits(module, x, module.hparams.tta_level), y) for x, y in datamodule.test_dataloader()]
    GlobalHydra.instance().clear()
    return Scored(
        ckpt,
        summary,
        torch.cat([logits for logits, _ in batches]).numpy(),
        torch.cat([labels for _, labels in batches]).numpy(),
        np.ascontiguousarray(datamodule.source.load().test_images.transpose(0, 3, 1, 2)),  # NHWC -> NCHW
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """scored(name): the model of MODELS[name], trained and scored once for the module."""
    cache: dict[str, Scored] = {}

    def get(name: str) -> Scored:
        if name not in cache:
            cache[name] = _train_and_score(name, tmp_path_factory)
        return cache[name]

    return get


def _inputs(images: np.ndarray, input_dtype: str) -> np.ndarray:
    return images if input_dtype == "uint8" else images.astype(np.float32) / np.float32(255.0)


def _confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def _check_against_eval(scored: Scored, logits: np.ndarray, probs: np.ndarray) -> float:
    """Argmax exactly eval's (per sample, and eval's confusion matrix), logits within LOGIT_ATOL."""
    assert (logits.argmax(1) == scored.logits.argmax(1)).all()
    assert _confusion(scored.labels, logits.argmax(1), logits.shape[1]) == scored.summary["confusion_matrix"]
    diff = float(np.abs(logits - scored.logits).max())
    assert diff < LOGIT_ATOL
    np.testing.assert_allclose(probs, torch.from_numpy(scored.logits).softmax(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    return diff


def _export(capfd, *args: str) -> tuple[int, str, str]:
    capfd.readouterr()  # the training's console output, when the fixture ran inside the test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main(["export", *args])
    out, err = capfd.readouterr()
    assert not [str(w.message) for w in caught]  # nothing for the user to read but our lines
    return code, out, err


# one ONNX export per model (~6 s CPU each on 2 cores), each input dtype once
@pytest.mark.parametrize("name, input_dtype", [("fast", "uint8"), ("resnet18", "float")])
def test_onnx_export_predicts_as_eval(scored, tmp_path, capfd, name, input_dtype):
    scored = scored(name)
    out = tmp_path / "served" / "model.onnx"
    code, stdout, stderr = _export(
        capfd, "--ckpt", str(scored.ckpt), "--format", "onnx", "--out", str(out), "--input", input_dtype
    )
    assert code == 0, stderr
    assert stderr == ""
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.json", "model.onnx"]
    assert stdout.splitlines()[0].startswith(f"wrote {out} (onnx, opset 20)")

    meta = json.loads((tmp_path / "served" / "model.json").read_text())
    loaded = load_trained(scored.ckpt)
    assert meta["classes"] == loaded.classes == [f"class_{i}" for i in range(10)]
    assert meta["mean"] == loaded.mean and meta["std"] == loaded.std
    assert meta["tta_level"] == scored.summary["tta_level"]
    assert meta["input"]["dtype"] == ("uint8" if input_dtype == "uint8" else "float32")
    assert meta["source_checkpoint"] == str(scored.ckpt.resolve()) and meta["file"] == "model.onnx"
    assert meta["verified"]["runtime"] == f"onnxruntime {ort.__version__}"
    assert meta["verified"]["max_abs_logit_diff"] < LOGIT_ATOL

    model = onnx.load(out)
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == loaded.classes and props["input_dtype"] == meta["input"]["dtype"]
    assert json.loads(props["cifar_lab"])["mean"] == loaded.mean

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    assert spec.name == "images" and spec.type == f"tensor({meta['input']['dtype'].replace('float32', 'float')})"
    assert spec.shape[1:] == [3, 32, 32] and not isinstance(spec.shape[0], int)  # a dynamic batch
    logits, probs = session.run(["logits", "probs"], {"images": _inputs(scored.images, input_dtype)})
    diff = _check_against_eval(scored, logits, probs)
    print(f"onnxruntime vs eval ({input_dtype}): max |logit difference| {diff:.3g}")


def test_torchscript_export_predicts_as_eval(scored, tmp_path, capfd):
    """The fast net (whitening, EMA, TTA) on the float path; the uint8 path is ONNX's above and the
    same ServingModel (a second TorchScript case would cost ~4 s of the file's budget)."""
    scored, input_dtype = scored("fast"), "float"
    ckpt = tmp_path / "last.ckpt"
    shutil.copy(scored.ckpt, ckpt)  # the default --out is beside the checkpoint
    code, stdout, stderr = _export(capfd, "--ckpt", str(ckpt), "--format", "torchscript", "--input", input_dtype)
    assert code == 0, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.json", "last.pt"]
    meta = json.loads((tmp_path / "last.json").read_text())
    assert meta["verified"]["runtime"].startswith("torch.jit")

    extra = {"cifar_lab.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=FutureWarning)
        module = torch.jit.load(tmp_path / "last.pt", _extra_files=extra)
    inside = json.loads(extra["cifar_lab.json"])
    assert inside["classes"] == meta["classes"] and inside["input"] == meta["input"]
    with torch.inference_mode():
        logits, probs = module(torch.from_numpy(_inputs(scored.images, input_dtype)))
        other = torch.zeros(2, 3, 32, 32, dtype=torch.float32 if input_dtype == "uint8" else torch.uint8)
        with pytest.raises(torch.jit.Error, match="this model takes"):
            module(other)  # the wrong dtype would be scaled wrongly: refused
    diff = _check_against_eval(scored, logits.numpy(), probs.numpy())
    print(f"torch.jit vs eval ({input_dtype}): max |logit difference| {diff:.3g}")


@pytest.mark.parametrize(
    "case", ["missing_ckpt", "foreign_ckpt", "text_ckpt", "format", "input", "tta", "out_under_file", "json_out"]
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capfd, case):
    ckpt, args = tmp_path / "run.ckpt", []
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, ckpt)  # a checkpoint, not cifar_lab's
    out = tmp_path / "out" / "model.onnx"
    fmt = "torchscript"
    if case == "missing_ckpt":
        ckpt = tmp_path / "none.ckpt"
    elif case == "text_ckpt":
        ckpt.write_text("not a checkpoint")
    elif case == "format":
        fmt = "tflite"
    elif case == "input":
        args = ["--input", "float16"]
    elif case == "tta":
        args = ["--tta-level", "3"]
    elif case == "out_under_file":
        (tmp_path / "out").write_text("a file where the folder should be")
    elif case == "json_out":
        out = tmp_path / "out" / "model.json"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, stdout, stderr = _export(capfd, "--ckpt", str(ckpt), "--format", fmt, "--out", str(out), *args)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no partial or temporary file


def test_onnx_without_the_export_extra_names_it(tmp_path, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what `import onnxscript` meets when it is not installed
    code, _, stderr = _export(capfd, "--ckpt", str(tmp_path / "any.ckpt"), "--format", "onnx")
    assert code == 2
    assert stderr == "error: --format onnx needs the export extra: pip install 'cifar_lab[export]'\n"
