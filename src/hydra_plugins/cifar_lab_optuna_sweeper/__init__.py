"""cifar_lab's Optuna sweeper. Hydra loads sweepers only from the ``hydra_plugins``
namespace package, hence this folder beside ``src/cifar_lab``. Hydra imports every module
here at start-up, so none may import Optuna at module level (it is an optional extra)."""
