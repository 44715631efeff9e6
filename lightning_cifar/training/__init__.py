"""Training: the LightningModule (``Classifier``, which owns its input standardisation), its optimizers
and learning-rate schedules, and the callbacks every run gets (``callbacks/``)."""
