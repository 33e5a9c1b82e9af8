"""The user-facing tasks: train, eval, predict, report, and the `cifar-lab` command."""
