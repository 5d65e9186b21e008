"""Benchmarks: the engine against its baselines, measured in the same run. Run each as
``python -m benchmarks.NAME --help``; results go to benchmarks/out/ (JSON) and benchmarks/RESULTS.md."""
