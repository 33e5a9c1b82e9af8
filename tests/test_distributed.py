"""Multi-process training: DDP on 2 CPU processes (gloo), the Hydra output-folder trap, SLURM config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cifar_lab.config.trainer import global_batch
from tests.conftest import REPO_ROOT

DDP_ARGS = [
    "data=synthetic",
    "model=seed_cnn",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.max_epochs=2",
    "trainer.precision=32-true",
    "logger=csv",
    "callbacks=none",
    "data.batch_size=50",
    "data.val_size=100",
]


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def _whole_split_accuracy(ckpt_path) -> float:
    """Test accuracy of a checkpoint of a DDP_ARGS run, scored in this process on the whole split."""
    import torch

    from cifar_lab.data.datamodule import CIFARDataModule
    from cifar_lab.data.sources import SyntheticSource
    from cifar_lab.runtime.checkpoints.model import load_trained

    loaded = load_trained(ckpt_path)
    source = SyntheticSource(num_classes=10, train_per_class=100, test_per_class=20, seed=0)  # data=synthetic, seed 0
    datamodule = CIFARDataModule(source, val_size=100, batch_size=50, mean=loaded.mean, std=loaded.std)
    datamodule.setup("test")
    net = loaded.net.eval()
    with torch.no_grad():
        right = sum(int((net(x).argmax(-1) == y).sum()) for x, y in datamodule.test_dataloader())
    return right / len(datamodule._on_device("test")[1])


def test_ddp_two_cpu_processes_share_one_output_folder(tmp_path):
    run_dir = tmp_path / "run"
    # the test report's sync and the gathering of mistakes run on both ranks at test end
    report = "+callbacks.test_predictions._target_=cifar_lab.training.callbacks.TestPredictions"
    result = _run([*DDP_ARGS, report, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 900 training images, 2 ranks, batch 50 per rank: 450 each -> 9 steps an epoch, not 18
    assert metrics["steps"] == 18 and metrics["epochs"] == 2
    assert metrics["test/acc"] > 0.3
    # each rank scored half of the test split and the metric synced: the accuracy is that of
    # the final weights on the whole split, in one process
    assert metrics["test/acc"] == pytest.approx(_whole_split_accuracy(run_dir / "checkpoints" / "last.ckpt"), abs=1e-6)
    # one run folder: no other folder was made for rank 1, and only rank 0 wrote results
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["run"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert not list(run_dir.glob(".pl_hydra*"))
    assert len(list(run_dir.rglob("metrics.json"))) == 1
    assert len(list((run_dir / "csv").glob("metrics.csv"))) == 1


def _report_of_shard(rank: int, world_size: int, port: int, probs, labels, out_dir) -> None:
    """One DDP rank (gloo): the test report of its share (every world_size-th sample), computed."""
    import torch
    import torch.distributed as dist

    from cifar_lab.training.callbacks import gather_worst
    from cifar_lab.training.metrics import test_report

    def stacked(tensor: torch.Tensor) -> torch.Tensor:  # what trainer.strategy.all_gather returns
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts)

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        report = test_report(probs.shape[1], ece_bins=5)
        report.update(probs[rank::world_size], labels[rank::world_size])
        # rank 0 made mistakes with confidence 0.9, 0.5 and 0.2, rank 1 one with 0.7: each image
        # is filled with its confidence, its label is 10 * rank
        confidence = torch.tensor([0.9, 0.5, 0.2] if rank == 0 else [0.7])
        n = len(confidence)
        mine = (
            confidence.view(n, 1, 1, 1).expand(n, 3, 2, 2).clone(),
            torch.full((n,), 10 * rank),
            torch.ones(n, dtype=torch.long),
            confidence,
        )
        worst = gather_worst(stacked, mine, 3, (3, 2, 2))
        torch.save({"report": report.compute(), "worst": worst}, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_the_test_report_of_sharded_ranks_is_the_report_of_the_whole_split(tmp_path):
    """Calibration error, confusion matrix and per-class accuracy sync across DDP ranks: two
    ranks that each score half of the split report what one process scoring all of it does. The
    grid of most confident mistakes takes them from both ranks."""
    import socket

    import torch
    import torch.multiprocessing as mp

    from cifar_lab.training.metrics import test_report

    generator = torch.Generator().manual_seed(0)
    probs = torch.randn(101, 4, generator=generator).softmax(-1)
    labels = torch.randint(0, 4, (101,), generator=generator)
    whole = test_report(4, ece_bins=5)
    whole.update(probs, labels)
    expected = whole.compute()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    # forked, not spawned: the ranks inherit this process's imports (torch, Lightning, torchmetrics)
    # instead of each importing them again (~9 CPU s a rank); they are still two processes, each
    # with its own gloo process group, and every op they run is too small to enter a thread pool
    mp.start_processes(_report_of_shard, args=(2, port, probs, labels, tmp_path), nprocs=2, start_method="fork")
    for rank in range(2):
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        got = saved["report"]
        images, true, _, confidence = saved["worst"]  # the 3 most confident mistakes of both ranks
        assert confidence.tolist() == pytest.approx([0.9, 0.7, 0.5]) and true.tolist() == [0, 10, 0]
        assert torch.equal(images[:, 0, 0, 0], confidence)  # each image stays with its own row
        assert torch.equal(got["confusion_matrix"], expected["confusion_matrix"])
        assert int(got["confusion_matrix"].sum()) == 101  # each sample once, not once per rank
        assert torch.allclose(got["acc_per_class"], expected["acc_per_class"])
        assert torch.allclose(got["ece"], expected["ece"], atol=1e-6)


def test_gathered_mistakes_skip_the_padding_of_a_rank_without_mistakes():
    """A rank with no mistakes sends only padding (confidence -1), which is never shown."""
    import torch

    from cifar_lab.training.callbacks import gather_worst

    def with_a_mistake_free_rank(tensor):  # rank 1 padded its empty share: confidence -1
        return torch.stack([tensor, torch.full_like(tensor, -1)])

    mine = (torch.ones(2, 3, 2, 2), torch.tensor([4, 5]), torch.tensor([1, 2]), torch.tensor([0.8, 0.6]))
    images, true, predicted, confidence = gather_worst(with_a_mistake_free_rank, mine, 4, (3, 2, 2))
    assert confidence.tolist() == pytest.approx([0.8, 0.6]) and true.tolist() == [4, 5] and predicted.tolist() == [1, 2]
    assert gather_worst(with_a_mistake_free_rank, None, 4, (3, 2, 2)) is None


def test_ddp_inside_a_multirun_does_not_re_expand_the_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = _run(
        [
            "-m",
            *DDP_ARGS,
            "trainer.max_epochs=1",
            "seed=0,1",
            f"hydra.sweep.dir={sweep_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1"], jobs  # children re-running '-m seed=0,1' would add jobs
    seeds = [json.loads((sweep_dir / j / "metrics.json").read_text())["seed"] for j in jobs]
    assert seeds == [0, 1]


@pytest.mark.parametrize("devices,nodes,expected", [(1, 1, 512), (2, 1, 1024), ([0, 1, 2], 2, 3072), ("4", 1, 2048)])
def test_global_batch_follows_devices_and_nodes(devices, nodes, expected):
    assert global_batch(512, devices, nodes) == expected


def test_decoupled_lr_uses_the_global_batch(make_cfg):
    cfg = make_cfg("experiment=speed94", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", fast=False)
    assert cfg.optimizer.batch_size == 1024 * 8


def test_slurm_launcher_config_composes_with_submitit_parameters(make_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = make_cfg(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.timeout_min=30",
        fast=False,
    )
    launcher = cfg.hydra.launcher
    # submitit_slurm's launcher with the requeue (tests/test_requeue.py runs its local twin)
    assert launcher._target_ == "hydra_plugins.cifar_lab_submitit.launcher.RequeueingSlurmLauncher"
    assert launcher.max_num_timeout > 0  # submitit_slurm's 0 would end a job at its first time limit
    assert (launcher.partition, launcher.timeout_min) == ("gpu", 30)
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)


NAN_ON_RANK_1 = """
import os
import signal
import sys

from torch import nn

from cifar_lab.training import finite

if os.environ.get("LOCAL_RANK", "0") == "1":  # only rank 1's loss turns NaN, from its 3rd step
    original, calls = nn.CrossEntropyLoss.forward, [0]

    def forward(self, logits, labels):
        calls[0] += 1
        loss = original(self, logits, labels)
        return loss * float("nan") if calls[0] >= 3 else loss

    nn.CrossEntropyLoss.forward = forward
if os.environ.get("CHECK_AS_ON_A_GPU"):  # the flag read every SYNC_EVERY steps, not every step
    finite.sync_every = lambda device: finite.SYNC_EVERY

from cifar_lab.tasks.train import main

main()
"""


def _run_nan_on_rank_1(tmp_path, *extra: str, env: dict[str, str] | None = None):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    run_dir = tmp_path / "run"
    args = [*DDP_ARGS, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}", *extra]
    result = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    return result, run_dir


def test_nan_on_one_ddp_rank_stops_every_rank_at_that_step(tmp_path):
    """Without a shared check the healthy rank would wait forever in the next all-reduce."""
    result, run_dir = _run_nan_on_rank_1(tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: the training loss became nan at step 3 (epoch 0) on rank 1 of 2" in result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["failed_step"] == 3


def test_a_nan_first_seen_by_the_check_before_a_save_stops_every_rank_and_writes_nothing(tmp_path):
    """As on a GPU, the flag is read every 25 steps, so the step checkpoint at step 3 is the first
    read after rank 1's NaN. That read is collective: both ranks stop there, naming rank 1, and
    rank 0 does not write the weights the all-reduce has already made NaN (a check of rank 0's own
    flag would write them, and a check of rank 1's alone would leave rank 0 waiting in the save's
    barrier until the collective timed out)."""
    result, run_dir = _run_nan_on_rank_1(tmp_path, "checkpoint_every_n_steps=3", env={"CHECK_AS_ON_A_GPU": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: the training loss became nan at step 3 (epoch 0) on rank 1 of 2" in result.stderr
    assert not (run_dir / "checkpoints" / "resume.ckpt").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["failed_step"] == 3


SIGTERM_TO_RANK_1 = """
import os
import signal
import signal

from torch import nn

if os.environ.get("LOCAL_RANK", "0") == "1":  # a signal to rank 1 alone, in its 3rd step
    original, calls = nn.CrossEntropyLoss.forward, [0]

    def forward(self, logits, labels):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, logits, labels)

    nn.CrossEntropyLoss.forward = forward

from cifar_lab.tasks.train import main

main()
"""


def test_a_signal_to_one_ddp_rank_stops_every_rank_at_the_same_step_and_resumes(tmp_path):
    """The ranks agree on stopping: rank 0 was never signalled, yet both save one resume.ckpt at
    step 3 and stop (alone, rank 1 would save and leave rank 0 waiting in the save's barrier);
    the resumed run then completes."""
    script = tmp_path / "sigterm_to_rank_1.py"
    script.write_text(SIGTERM_TO_RANK_1)
    run_dir = tmp_path / "run"
    args = [*DDP_ARGS, f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    stopped = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "preempted" and metrics["steps"] == 3
    import torch

    saved = torch.load(run_dir / "checkpoints" / "resume.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    resumed = _run([*args, "resume=latest"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 18
