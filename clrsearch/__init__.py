"""clrsearch: a two-layer NumPy network on CIFAR-10 trained with cyclical
learning rates, whose L2 strength is searched with Optuna and tracked in MLflow."""

__version__ = "0.1.0"
