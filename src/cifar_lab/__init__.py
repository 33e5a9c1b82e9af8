"""cifar_lab: train CIFAR-10 classifiers from scratch with Lightning + Hydra.

Importing the package stays cheap (no torch) so that Hydra can parse the command line
before any heavy import happens.
"""

__version__ = "0.1.0"
