"""Benchmarks and studies of remix: not part of the library, run from a checkout as `python -m bench.<name>`.

    bench/reporting.py      machine description, a result written as docs/benchmarks/<name>.md and .json
    bench/efficiency/       the rollout-efficiency study (`python -m bench.efficiency`), its analysis, report,
                            its step-0 evaluation cache and `study_time` (a study run again, compared)
    bench/backend.py        one backend against another, whole runs side by side
    bench/grading.py        the grader pool's throughput
    bench/greedy_eval.py    greedy evaluation on the CPU
    bench/throughput.py     learner and rollout throughput, the chunked LM head's memory
    bench/trl.py            remix beside TRL's GRPO trainer
    bench/xla.py            the XLA platform on XLA's CPU backend against the CPU platform

Each writes its table to docs/benchmarks/ with the command, date, machine and versions (docs/benchmarks/README.md
indexes them). `scripts/gpu_check.py` (the prepared command of a session lent a GPU) uses bench.reporting too.
"""
