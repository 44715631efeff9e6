"""The LightningModule, its optimizers, schedules and callbacks (lightning_cifar/training)."""
