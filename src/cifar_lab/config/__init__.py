"""The config's rules, torch-free, one home per group (each checked by ``check.validate_config``
on the command line and again by the one constructor that receives the value):

* ``values``: reading a value (``get``, ``present``) and refusing it (``require``: ConfigError)
* ``run``: seed, training length, resume and ckpt_path, typed values a task would replace
* ``data``: batch sizes, validation split, augmentation, crops, normalization, the source
* ``module``: the LightningModule's options and the tricks' switches (module.*)
* ``optimization``: optimizer.* and scheduler.*
* ``trainer``: trainer.*, devices and nodes, the global batch
* ``callbacks``: freezing, early stopping
* ``lr_find``: tune=lr_find
* ``resolvers``: the ``${cifar_lab.*:}`` interpolations of conf/
* ``check``: ``validate_config``, all of the above in the order a run meets them

Nothing is imported here, so a constructor that needs one rule loads that module alone.
"""
