"""Reports on a folder of runs (a multirun, an Optuna sweep, all of outputs/): the library
behind `cifar-lab report` (cifar_lab.tasks.report), one job per module.

jobs.py finds a sweep's jobs and reads their metrics and overrides, table.py makes the
mean ± std rows and their CSV/Markdown, plot.py draws them, sweep.py writes and prints the
whole report; search.py and trials.py do the same for an Optuna study.
Only the standard library is imported at module level: rich, matplotlib and optuna load when used.
"""
