"""cifar_lab's resumable Optuna sweeper. Hydra loads sweepers only from the ``hydra_plugins``
namespace package, hence this folder beside ``src/cifar_lab``."""
