"""The benchmark scripts under benchmarks/: their imports and their resumable tables."""
