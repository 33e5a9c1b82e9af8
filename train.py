"""Train a CIFAR-10 classifier: `python train.py model=wide optimizer.lr=0.05`.

Thin on purpose: configs live in conf/, the task in cifar_lab.tasks.train.
"""

from cifar_lab.tasks.train import main

if __name__ == "__main__":
    main()
