"""Callbacks: the last checkpoint after every epoch, predictions as CSV, the classification report,
and the guard that stops a run whose loss is no longer a number."""
