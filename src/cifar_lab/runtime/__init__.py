"""The plumbing under every task: checkpoints and resuming, atomic writes, RNG state,
distributed launch, hardware probes, logging and figures."""
