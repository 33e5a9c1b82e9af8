"""Lightning's private internals that cifar_lab relies on (training.lightning_internals) are still
where we expect them: each failure names the symbol that moved and the feature of ours it breaks.
No training: a CPU Trainer is only constructed."""

from __future__ import annotations

import ast
import inspect
import signal

import pytest

from cifar_lab.training import lightning_internals
from tests.conftest import REPO_ROOT


def _moved(symbol: str, breaks: str) -> str:
    return (
        f"Lightning moved or renamed {symbol}: {breaks} breaks. Update "
        f"src/cifar_lab/training/lightning_internals.py for this Lightning version."
    )


def _names_used(function) -> set[str]:
    """The global and attribute names ``function``'s code looks up (inner code objects too)."""
    names: set[str] = set()
    codes = [inspect.unwrap(function).__code__]
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if inspect.iscode(c))
    return names


@pytest.fixture(scope="module")
def trainer():
    import lightning.pytorch as pl

    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_the_ddp_launcher_still_starts_hydra_children_with_hydra_subprocess_cmd(monkeypatch):
    from lightning.pytorch.strategies.launchers import subprocess_script

    breaks = "DDP under Hydra (runtime.distributed: ranks from the job's own config and folder)"
    assert hasattr(subprocess_script, "_hydra_subprocess_cmd"), _moved(
        "lightning.pytorch.strategies.launchers.subprocess_script._hydra_subprocess_cmd", breaks
    )
    # the launcher looks the name up in its module when it starts the children: replacing it there takes effect
    assert "_hydra_subprocess_cmd" in _names_used(subprocess_script._SubprocessScriptLauncher._call_children_scripts), (
        _moved("the call of _hydra_subprocess_cmd in _SubprocessScriptLauncher._call_children_scripts", breaks)
    )
    monkeypatch.setattr(subprocess_script, "_hydra_subprocess_cmd", subprocess_script._hydra_subprocess_cmd)

    def command(local_rank):
        return ["python", "train.py"], "."

    lightning_internals.start_ddp_children_with(command)
    assert subprocess_script._hydra_subprocess_cmd is command


def test_the_trainer_still_installs_its_signal_handlers_through_signal_connector(trainer):
    import lightning.pytorch as pl

    breaks = "pre-emption (checkpoints.preemption: Lightning's SIGTERM handler would stop without a checkpoint)"
    connector = getattr(trainer, "_signal_connector", None)
    assert connector is not None and callable(getattr(connector, "register_signal_handlers", None)), _moved(
        "Trainer._signal_connector.register_signal_handlers", breaks
    )
    assert {"_signal_connector", "register_signal_handlers"} <= _names_used(pl.Trainer._run), _moved(
        "the call of self._signal_connector.register_signal_handlers() in Trainer._run", breaks
    )
    before = signal.getsignal(signal.SIGTERM)
    lightning_internals.keep_lightning_off_the_signals(trainer)
    trainer._signal_connector.register_signal_handlers()
    assert signal.getsignal(signal.SIGTERM) is before  # ours (here: the default) is left in place


def test_the_fit_loop_still_holds_its_combined_loader_and_saves_its_states(trainer):
    from lightning.pytorch.utilities.combined_loader import CombinedLoader

    breaks = "resuming mid-epoch (ResumeCheckpoint puts the training loader back where it stopped)"
    assert hasattr(trainer.fit_loop, "_combined_loader"), _moved("trainer.fit_loop._combined_loader", breaks)
    assert lightning_internals.fit_combined_loader(trainer) is None  # before fit builds it

    class Stateful(list):
        def state_dict(self):
            return {"batch_size": 7, "position": 3}

        def load_state_dict(self, state):
            pass

    loader = CombinedLoader([Stateful([1, 2])])
    trainer.fit_loop._combined_loader = loader
    try:
        assert lightning_internals.fit_combined_loader(trainer) is loader
        checkpoint = {"loops": {"fit_loop": trainer.fit_loop.state_dict()}}  # as Lightning saves the loops
    finally:
        trainer.fit_loop._combined_loader = None
    assert lightning_internals.saved_loader_states(checkpoint) == [{"batch_size": 7, "position": 3}], _moved(
        "the fit loop's saved state 'state_dict' -> 'combined_loader' (_FitLoop.on_save_checkpoint)",
        breaks + ", and the resume check of the batch size",
    )
    assert lightning_internals.saved_loader_states({}) == []


def test_the_loggers_still_flatten_params_with_convert_params_and_flatten_dict():
    import lightning.fabric.utilities.logger as logger_utils
    from lightning.pytorch.loggers import MLFlowLogger

    breaks = "a resumed run's MLflow params (training.mlflow_logger compares them as Lightning flattens them)"
    for name in ("_convert_params", "_flatten_dict"):
        assert callable(getattr(logger_utils, name, None)), _moved(f"lightning.fabric.utilities.logger.{name}", breaks)
    assert {"_convert_params", "_flatten_dict"} <= _names_used(MLFlowLogger.log_hyperparams), _moved(
        "MLFlowLogger.log_hyperparams's flattening (_convert_params, _flatten_dict)", breaks
    )
    assert lightning_internals.flatten_hyperparams({"a": {"b": 1}, "c": None}) == {"a/b": 1, "c": None}


# private names reached outside lightning_internals.py, by what they belong to (none is Lightning's)
NOT_LIGHTNING = {
    "torch": "torch's own (_foreach_* kernels)",
    "nn": "torch's own (nn.modules.batchnorm._NormBase)",
    "super()": "our own classes",
    "metric": "torchmetrics' Metric running state (runtime.checkpoints.state)",
}


def _private_uses(path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lightning"):
            found += [
                f"{node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")
            ]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = ast.unparse(node).split(".", 1)[0]
            if root not in ("self", "cls", *NOT_LIGHTNING):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_lightning_internals_touches_private_names():
    src = REPO_ROOT / "src"
    own = src / "cifar_lab" / "training" / "lightning_internals.py"
    offenders = [
        f"{p.relative_to(REPO_ROOT)}:{hit}" for p in sorted(src.rglob("*.py")) if p != own for hit in _private_uses(p)
    ]
    assert offenders == [], (
        "a private (underscore) name outside training/lightning_internals.py; Lightning's go there "
        "(with a check here), others into NOT_LIGHTNING with what they belong to:\n" + "\n".join(offenders)
    )
    assert _private_uses(own), "the check no longer sees lightning_internals.py's own uses"
