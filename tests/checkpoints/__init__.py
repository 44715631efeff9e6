"""Checkpoint files: what is refused, and how (lightning_cifar/checkpoints)."""
