"""The rollout-efficiency study: `python -m bench.efficiency` runs it (study.py), analysis.py holds its
arithmetic, report.py writes docs/benchmarks/efficiency.md, study_time.py compares a study run again with an
earlier one, initial_evaluation.py evaluates a base model once per worker process."""
