"""Commands run from a checkout: `python scripts/run.py` (training), `python scripts/compare_runs.py`, and
`python -m scripts.gpu_check` (the prepared call of a session lent a GPU; run as a module from the repository
root, so that it imports bench/ and the project without touching sys.path)."""
