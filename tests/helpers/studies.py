"""A tiny study on the tiny dataset: two axes, one baseline, two seeds, runs of seconds."""

import yaml

BASE = {"backbone": "convpool", "kwargs": {"widths": [4, 8], "kernels": [5, 3]}}


def tiny_study(data_dir, **overrides):
    study = {
        "name": "tiny",
        "base": BASE,
        "recipe": {
            "trainer": {"max_epochs": 1, "precision": "32-true", "num_sanity_val_steps": 0},
            "model": {"lr": 0.05},
            "data": {"data_dir": str(data_dir), "verify": False, "download": False, "val_split": 40,
                     "batch_size": 32, "eval_batch_size": 50},
        },
        "axes": [{"name": "width", "kind": "width", "param": "width_mult", "scale": "log2", "values": [0.5, 1]},
                 {"name": "depth", "kind": "depth", "param": "blocks", "values": [1, 2]}],
        "baselines": [{"label": "mlp_tiny", "backbone": "mlp_net", "kwargs": {"hidden": [4]}}],
        "seeds": [0, 1],
    }
    study.update(overrides)
    return study


def write_study(path, study):
    path.write_text(yaml.safe_dump(study))
    return path
