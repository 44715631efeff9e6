"""Optional tools, not needed to train: ``threads`` (a callback that follows the machine's load; the CLI
adds it, ``--threads.enabled=false`` turns it off) and ``timing`` (callbacks for benchmarks, added by
``--trainer.callbacks+=lightning_cifar.tools.timing.NAME``)."""
