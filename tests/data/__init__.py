"""The data module, the CIFAR files and augmentation (lightning_cifar/data)."""
