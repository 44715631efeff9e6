"""The width / depth / CNN-vs-MLP study: config, plan, runner, statistics and report."""
