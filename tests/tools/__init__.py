"""The optional tools (lightning_cifar/tools)."""
