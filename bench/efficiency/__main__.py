"""`python -m bench.efficiency`: the rollout-efficiency study (bench/efficiency/study.py says what it runs)."""

from bench.efficiency.study import cli

if __name__ == "__main__":
    cli()
