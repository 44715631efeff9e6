"""The backbones and the registry (lightning_cifar/models, lightning_cifar/registry.py)."""
