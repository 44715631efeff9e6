"""The command line (lightning_cifar/cli)."""
