"""Score a checkpoint on the test split: `python eval.py ckpt_path=PATH [data=...]`.

Thin on purpose, like train.py: the config is conf/eval.yaml, the task cifar_lab.tasks.eval.
"""

from cifar_lab.tasks.eval import main

if __name__ == "__main__":
    main()
