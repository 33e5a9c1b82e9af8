"""Every bad value is one ``error:`` line and exit 2, quickly, naming the value at fault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

HEAVY = {"torch", "lightning", "pytorch_lightning"}
LOOKAHEAD = "+callbacks.lookahead._target_=cifar_lab.recipes.lookahead.Lookahead"  # as experiment=speed94 adds it


def _run(script: str, *args: str, cwd: Path, importtime: bool = False) -> subprocess.CompletedProcess:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, str(REPO_ROOT / script), *args, f"paths.log_dir={cwd}/out"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.floors
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", "error: optimizer.lr=-1 must be a positive number"),
        ("resume=sometimes", "error: resume='sometimes' must be null or 'latest' (or give ckpt_path=PATH)"),
        ("checkpoint_every_n_steps=0", "error: checkpoint_every_n_steps=0 must be a positive integer or null"),
        (
            "data.policy=autoaugment",
            "error: data.policy='autoaugment' is not one of: none, trivialaugment, randaugment",
        ),
        (
            "module.ema_decay=1.5",
            "error: module.ema_decay=1.5 must be in (0, 1), e.g. 0.999 (per step), or null (no EMA)",
        ),
        (
            "+trainer.accumulate_grad_batches=4",
            "error: trainer.accumulate_grad_batches=4 is not supported (schedules, fractional epochs, decoupled lr "
            "and images/s count batches as steps): raise data.batch_size or trainer.devices instead",
        ),
        (
            "module.compile=fast",
            "error: module.compile='fast' must be false, true or a torch.compile mode: default, reduce-overhead, "
            "max-autotune, max-autotune-no-cudagraphs",
        ),
    ],
)
def test_config_errors_answer_before_torch_or_lightning_is_imported(tmp_path, override, message):
    """The README's promise of a quick answer: no heavy import happens before the checks."""
    result = _run("train.py", override, cwd=tmp_path, importtime=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert _error_lines(result) == [message]
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "cifar_lab" in imported  # -X importtime did report
    assert not imported & HEAVY, f"imported before the config check: {sorted(imported & HEAVY)}"


def test_a_value_a_data_source_rejects_is_one_line_naming_it(tmp_path):
    """Not the val_size check's arithmetic on a negative size ("has -10 images; use at most -11")."""
    result = _run("train.py", "data=synthetic", "data.source.train_per_class=-1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert _error_lines(result) == ["error: data.source.train_per_class=-1 must be a positive integer"]
    assert "Traceback" not in result.stderr and "InstantiationException" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data=folder", "data.source.on_size_mismatch=crop"],
            "data.source.on_size_mismatch='crop' must be one of: resize, error",
        ),
        (
            [LOOKAHEAD, "+callbacks.lookahead.every=0"],
            "callbacks.lookahead: every=0 must be a positive integer (steps between pulls)",
        ),
        ([LOOKAHEAD, "+callbacks.lookahead.decay=1.5"], "callbacks.lookahead: decay=1.5 must be a number in [0, 1)"),
        (
            ["+callbacks.test_predictions.colour=red"],
            "callbacks.test_predictions: TestPredictions.__init__() got an unexpected keyword argument 'colour'",
        ),
        (
            ["trainer.accelerator=nonsense"],
            "trainer: You selected an invalid accelerator name: `accelerator='nonsense'`.",
        ),
        (
            ["callbacks.model_checkpoint._target_=cifar_lab.nope.Checkpoint"],
            "callbacks.model_checkpoint: Error locating target 'cifar_lab.nope.Checkpoint'",
        ),
    ],
)
def test_a_value_a_constructor_rejects_is_one_config_error_naming_its_key(make_cfg, tmp_path, overrides, message):
    """Hydra's multi-line InstantiationException becomes the project's one line, keyed by the config path."""
    from cifar_lab.errors import CifarLabError
    from cifar_lab.tasks.train import train

    extra = [f"data.path={tmp_path}"] if "data=folder" in overrides else []
    cfg = make_cfg(*overrides, *extra)
    with pytest.raises(CifarLabError) as err:
        train(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.glob("**/*.ckpt"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", "seed=-1 must be a whole number from 0 to 4294967295 (what numpy and Lightning accept)"),
        ("seed=4294967296", "seed=4294967296 must be a whole number from 0 to 4294967295"),
        ("data.seed=-2", "data.seed=-2 must be a whole number from 0 to 4294967295"),
        (
            "trainer.devices=0",
            "trainer.devices=0 must be a positive number of devices, a list of device ids (e.g. [0,1]), or auto",
        ),
        ("trainer.devices=[]", "trainer.devices=[] must be a positive number of devices"),
        ("trainer.num_nodes=0", "trainer.num_nodes=0 must be a positive integer"),
    ],
)
def test_seeds_and_device_counts_are_checked_before_any_work(make_cfg, override, message):
    from cifar_lab.config.check import validate_config
    from cifar_lab.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate_config(make_cfg(override))
    assert message in str(err.value) and "\n" not in str(err.value)
    validate_config(make_cfg("seed=4294967295", "trainer.devices=auto"))  # the bounds themselves are fine


# -- point 5: a typed value is never ignored silently ----------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["experiment=speed94", "trainer.max_epochs=1"],
            "trainer.max_epochs=1 would be ignored: epochs=9.9 sets the training length; use epochs=1 instead",
        ),
        (
            ["experiment=speed94", "trainer.max_steps=50"],
            "trainer.max_steps=50 would be ignored: epochs=9.9 sets the training length; add epochs=null to stop at trainer.max_steps",
        ),
        (
            ["data.val_size=0", "+trainer.limit_val_batches=0.5"],
            "trainer.limit_val_batches=0.5 would be ignored: data.val_size=0 turns validation off; set data.val_size=N (> 0) to validate",
        ),
        (
            ["data.val_size=0", "callbacks.model_checkpoint.monitor=val/loss"],
            "callbacks.model_checkpoint.monitor='val/loss' would be ignored: data.val_size=0 turns validation off",
        ),
        (
            ["data.val_size=0", "callbacks.model_checkpoint.save_top_k=3"],
            "callbacks.model_checkpoint.save_top_k=3 would be ignored: data.val_size=0 turns validation off",
        ),
    ],
)
def test_a_typed_value_the_run_would_replace_stops_with_what_to_type(make_cfg, overrides, message):
    from cifar_lab.config.check import validate_config
    from cifar_lab.errors import ConfigError

    cfg = make_cfg("data=cifar10", *overrides, fast=False)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=speed94", "epochs=1"],  # the fix the message names
        ["experiment=speed94", "epochs=null", "trainer.max_steps=50"],
        ["experiment=speed94"],  # the recipe's own trainer.max_epochs was not typed
        ["data.val_size=0", "callbacks.model_checkpoint.monitor=null", "+trainer.limit_val_batches=0"],
        ["trainer.max_epochs=3", "trainer.max_steps=50"],  # no epochs: both are Lightning's own limits
    ],
)
def test_typed_values_the_run_uses_pass(make_cfg, overrides):
    from cifar_lab.config.check import validate_config

    validate_config(make_cfg("data=cifar10", *overrides, fast=False))


def test_the_cli_says_what_to_type_instead_of_training_the_recipes_length(tmp_path):
    result = _run(
        "train.py", "experiment=speed94", "data=synthetic", "trainer.max_epochs=1", cwd=tmp_path, importtime=True
    )
    assert result.returncode == 2
    assert _error_lines(result) == [
        "error: trainer.max_epochs=1 would be ignored: epochs=9.9 sets the training length; use epochs=1 instead"
    ]


# -- point 9: eval refuses a checkpoint trained on other classes -------------------------------------
def _image_folder(root: Path, classes: list[str]) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), (len(name) * 20, 0, 0)).save(root / split / name / "0.png")
    return root


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "folder",
            "does not fit this data: its class names ['class_0', 'class_1', 'class_2', 'class_3']... differ from "
            "this data's ['airplane', 'automobile', 'bird', 'cat']...; score it on the data it was trained on",
        ),
        ("synthetic", "does not fit this data: it was trained on 10 classes, this data has 5"),
    ],
)
def test_eval_refuses_a_checkpoint_trained_on_other_classes(small_multirun, tmp_path, data, message):
    from cifar_lab.errors import CheckpointError
    from cifar_lab.tasks.eval import evaluate
    from tests.conftest import compose_config

    ckpt = next(small_multirun.glob("*/checkpoints/last.ckpt"))  # data=synthetic: class_0 .. class_9
    cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    extra = (
        ["data=folder", f"data.path={_image_folder(tmp_path / 'images', cifar)}"]
        if data == "folder"
        else ["data=synthetic", "data.source.num_classes=5"]
    )
    cfg = compose_config(
        [f"ckpt_path={ckpt}", *extra, "trainer=cpu", "logger=csv"], tmp_path / "run", config_name="eval"
    )
    with pytest.raises(CheckpointError) as err:
        evaluate(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_eval_refuses_typed_data_settings_it_takes_from_the_checkpoint(tmp_path):
    result = _run("eval.py", "ckpt_path=missing.ckpt", "data=synthetic", "data.mean=[0.5,0.5,0.5]", cwd=tmp_path)
    assert result.returncode == 2
    assert _error_lines(result) == [
        "error: data.mean=[0.5, 0.5, 0.5] would be ignored: eval normalizes with the mean and std the checkpoint "
        "was trained with; drop data.mean"
    ]


# -- point 9, still: a search that runs nothing, an override Hydra cannot read ----------------------
@pytest.mark.floors
@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        (
            "train.py",
            ["hparams_search=optuna", "hydra.sweeper.n_trials=0"],
            "error: hydra.sweeper.n_trials=0 must be a positive integer (trials to run in this launch)",
        ),
        (
            "train.py",
            ["hparams_search=optuna", "optimizer.lr=interval(1.0)"],
            "error: cannot read 'optimizer.lr=interval(1.0)' ('interval(1.0)': missing a required argument: "
            "'end'); see https://hydra.cc/docs/advanced/override_grammar/basic/",
        ),
        (
            "eval.py",
            ["ckpt_path=last.ckpt", "data.batch_size=choice()"],
            "error: cannot read 'data.batch_size=choice()' ('choice()': empty choice is not legal); "
            "see https://hydra.cc/docs/advanced/override_grammar/basic/",
        ),
    ],
)
def test_a_search_of_no_trials_or_an_unreadable_override_is_one_short_line(tmp_path, script, args, message):
    """Not exit 0 after running nothing, nor Hydra's three-line parse error with exit 1."""
    result = _run(script, *args, cwd=tmp_path, importtime=True)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert [line for line in lines if not line.startswith("import time:")] == [message] and len(message) < 200
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    assert "cifar_lab" in imported and not imported & HEAVY, sorted(imported & HEAVY)
    assert not (tmp_path / "out").exists()  # no run or sweep folder
