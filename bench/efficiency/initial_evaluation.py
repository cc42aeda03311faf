"""The study's step-0 evaluation, once per worker process: its runs start from one base model, and greedy
evaluation of the same weights on the same prompts with the same settings gives the same result, so a process
evaluates step 0 once per key and hands the result to every later run (`run(..., evaluate_start=once_per_process)`).

Only in one process on the CPU, where greedy decoding is deterministic; a result with grader timeouts (which depend
on the machine's load) is not kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import torch

from remix import distributed as dist
from remix.config import TrainConfig
from remix.trainer import EVAL_PROMPTS_PER_CALL, Trainer

_results: dict[str, dict[str, float]] = {}


def evaluation_key(cfg: TrainConfig, trainer: Trainer) -> str:
    """What a greedy evaluation's result depends on: the policy's weights, the prompts and their answers, the
    engine and grading settings."""
    h = hashlib.sha256()
    for name, t in trainer.learner.policy_weights():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    for split in (trainer.heldout, trainer.validation):
        h.update(json.dumps([[e.prompt_ids, e.problem.answer] for e in split]).encode())
    settings = {"platform": cfg.platform, "dtype": cfg.model.dtype, "rollout": asdict(cfg.rollout),
                "grading": cfg.grading, "grader_timeout_s": cfg.grader_timeout_s, "per_call": EVAL_PROMPTS_PER_CALL}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def once_per_process(cfg: TrainConfig, trainer: Trainer) -> dict[str, float]:
    """trainer.evaluate() before training, computed once per process and key (a StartEvaluation)."""
    if not (cfg.platform == "cpu" and dist.world_size() == 1):
        return trainer.evaluate()
    key = evaluation_key(cfg, trainer)
    if key not in _results:
        result = trainer.evaluate()
        if any(v for k, v in result.items() if k.endswith("/timeouts")):
            return result
        _results[key] = result
    return dict(_results[key])
