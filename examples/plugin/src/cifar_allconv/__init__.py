"""Example third-party backbone package for lightning-cifar."""
