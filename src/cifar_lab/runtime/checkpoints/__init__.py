"""Checkpoints and resuming: what each module holds.

* ``files``      checkpoint files: atomic writes, weights-only reads, ``<run>/`` paths (SafeCheckpointIO)
* ``model``      a trained net rebuilt from a checkpoint alone; does a checkpoint fit this run
* ``state``      what a checkpoint adds for an exact resume: metric running states, global RNGs
* ``callback``   ResumeCheckpoint, the Lightning callback that writes the step/pre-emption checkpoint
* ``latest``     where a run resumes from (``resume=latest``) and the command that resumes it
* ``preemption`` SIGTERM/SIGINT handling: Preempted, PreemptedExit, also_preempt_on

``latest`` and ``preemption`` import neither torch nor Lightning (train.py uses them before the
heavy imports), so this ``__init__`` imports nothing: import the module you need. Paths
(``checkpoints/``, the resume file's name) are :mod:`cifar_lab.runtime.run_folder`'s.
"""
