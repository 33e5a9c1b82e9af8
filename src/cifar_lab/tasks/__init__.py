"""The user-facing tasks: train, eval, predict, report, export, and the `cifar-lab` command."""
