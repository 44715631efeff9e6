"""Checkpoint files: read only when they hold plain data, written atomically, the model settings a run from
one keeps, and the run folders that ``--ckpt_path=last`` / ``best`` search."""
