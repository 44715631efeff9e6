"""The study: plan, runs, launchers, report (lightning_cifar/study)."""
