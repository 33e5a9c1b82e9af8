"""The training pieces: the LightningModule, its metrics and callbacks, optimizers and schedules,
and how a run is built from the config, timed and summarized."""
