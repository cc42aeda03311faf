"""The ReMix training loop (ALGORITHM.md sections 5 and 6), platform-free, readable top to bottom.

One step k (1-based):
  1. take h = whole groups worth at most p * B responses from the buffer (the last N policies' samples);
  2. generate B - h fresh responses (G per prompt) with the rollout engine, grade them, and compute
     GRPO group advantages for the fresh groups (historical groups keep theirs);
  3. learner log-probs over the batch: pi_k (the clip centre, and the behaviour log-probs of fresh
     samples), pi_ref (cached per group until reincarnation), pi_{k-1} (taken from the behaviour
     log-probs of samples made by pi_{k-1}); PPO: values and GAE with the current critic for all;
  4. m passes of shuffled mini-batch updates; push the new weights to the rollout engine;
  5. push the fresh groups into the buffer with version k and evict versions older than k - N + 1
     (only while p > 0: on-policy training keeps no history);
  6. count the fresh responses as rollouts (the cost the paper reports).
After step T: reference <- current weights, p <- 0, m <- 1, buffer cleared (reincarnation).
`--variant onpolicy` is the same loop with p = 0, m = 1, no reincarnation and lambda = 1.

Under torchrun every process runs this same loop on its share: B/N responses a step, whole groups, and
mini-batches of size/N. What the batch is made of does not depend on N: every process holds the whole buffer
(the fresh groups are shared after each step), draws the same historical groups from it with the same
generator and keeps its share of them, and takes its share of the fresh prompts from one global draw; the
shares are whole groups, as even as they divide. The learner makes the updates global (FSDP2, loss
denominators over all ranks) and the metrics below are summed over ranks before they are reported.

Simplifications relative to the paper, all deliberate:
  - the precedent pi_{k-1} before step 2 is the initial model (there is no pi_0);
  - rewards are 0/1 outcome rewards placed on the last response token (no format or length terms);
  - the engine's log-probs correct the policy-gradient term only with --objective.rollout-correction (off by
    default until a GPU measurement of the gap says otherwise); they are always measured, and stop the run
    when the engine clearly does not hold the learner's weights (--rollout.max-sampler-gap);
  - PPO advantages are not whitened across the batch;
  - historical groups are drawn uniformly over the stored policy versions (the last N policies), then
    uniformly over that version's groups;
  - evaluation is greedy decoding of a fixed held-out split, scored by the training rewards (the math reward is
    the benchmarks' grader).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from remix import distributed as dist
from remix import schedule
from remix.advantages import gae, grpo_advantages
from remix.batching import collate, pad_tokens, unpad_tokens
from remix.buffer import HostBuffer
from remix.config import TrainConfig
from remix.data import Problem, ProblemSource
from remix.interfaces import Group, Learner, Rollout, RolloutFailed, SamplingParams, TokenBatch
from remix.objective import rollout_correction_weights
from remix.reflection import count_reflecting
from remix.rewards.pool import GradeReport

# Prompts handed to the rollout engine per generate call in evaluation; the engine batches them as it can.
EVAL_PROMPTS_PER_CALL = 1024


@dataclass(frozen=True)
class EncodedProblem:
    problem: Problem
    prompt_ids: list[int]


def share(groups: list[Group], world: int, rank: int) -> list[Group]:
    """Process `rank`'s share of `groups`: consecutive, whole groups, as even as they divide (the first
    len % world processes take one more)."""
    base, extra = divmod(len(groups), world)
    start = rank * base + min(rank, extra)
    return groups[start:start + base + (rank < extra)]


class Trainer:
    def __init__(self, cfg: TrainConfig, rollout: Rollout, learner: Learner, grader, tokenizer,
                 train: ProblemSource[EncodedProblem], heldout: list[EncodedProblem],
                 validation: list[EncodedProblem] | None = None) -> None:
        self.cfg, self.rollout, self.learner, self.grader = cfg, rollout, learner, grader
        self.tokenizer, self.train, self.heldout = tokenizer, train, heldout
        self.validation = validation or []  # for choosing hyperparameters; never the reported held-out split
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.buffer = HostBuffer()
        self.generator = torch.Generator().manual_seed(cfg.seed)  # buffer sampling and mini-batch order
        self.step = 0  # last completed step
        self.rollouts = 0
        self.reincarnated_at: int | None = None
        self.consecutive_skips = 0  # optimizer updates skipped in a row for a non-finite loss or gradient
        self.reward_is_correctness = cfg.rewards().is_math_only  # the math reward alone: 0 or 1 per response

    # ---------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        cfg, k = self.cfg, self.step + 1
        world, rank = dist.world_size(), dist.rank()
        G = cfg.rollout.group_size
        groups_per_rank = cfg.batch_size // (world * G)  # this process's share of the batch, in groups
        reincarnated = self.reincarnated_at is not None
        p, m = schedule.offpolicy_fraction(cfg, reincarnated), schedule.utd_ratio(cfg, reincarnated)
        kl_lambda = schedule.kl_lambda(cfg, k, self.reincarnated_at)
        # KL(theta || pi_{k-1}) has weight beta * (1 - lambda): only then is pi_{k-1} needed at all.
        need_precedent = kl_lambda < 1.0 and schedule.uses_precedent(cfg)
        t0 = time.perf_counter()

        # 1. Historical groups: at most p * B responses, whole groups, from the last N policies (one draw, the same
        #    on every process; each keeps its share).
        drawn = self.buffer.sample(int(p * cfg.batch_size), self.generator) if p > 0 else []
        historical = share(drawn, world, rank)
        h = sum(len(g) for g in historical)

        # 2. Fresh groups: (B - H) / G prompts, G responses each, this process's share of them; grade; GRPO
        #    advantages. Every process draws all the prompts and keeps its slice, so the data order does not
        #    depend on N.
        fresh_per_rank = [groups_per_rank - len(share(drawn, world, r)) for r in range(world)]
        first = sum(fresh_per_rank[:rank])
        problems = self.train.next(sum(fresh_per_rank))[first:first + fresh_per_rank[rank]]
        generations = self.rollout.generate(
            [e.prompt_ids for e in problems],
            SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_new_tokens, n=G),
        )
        self.rollout.release_memory()  # a colocated engine gives the accelerator to the learner
        t_generated = time.perf_counter()
        texts = [self.tokenizer.decode(g.token_ids, skip_special_tokens=True) for gens in generations for g in gens]
        report = self.grader.grade(texts, [e.problem.row for e in problems for _ in range(G)])
        t_graded = time.perf_counter()
        fresh = []
        for i, (e, gens) in enumerate(zip(problems, generations)):
            rewards = report.scores[i * G:(i + 1) * G]
            fresh.append(Group(
                prompt_ids=e.prompt_ids, responses=[g.token_ids for g in gens], rewards=rewards, version=k,
                problem_id=e.problem.id, answer=e.problem.answer, finish_reasons=[g.finish_reason for g in gens],
                engine_logp=[torch.tensor(g.logprobs, dtype=torch.float32) for g in gens],
                advantages=grpo_advantages(torch.tensor([rewards]), cfg.grpo_scale_by_std).squeeze(0).tolist(),
            ))

        # 3. Log-probs under pi_k, pi_ref and pi_{k-1}; advantages for the whole batch.
        groups = historical + fresh
        batch = collate(groups, self.pad_id)
        self._fill_logprobs(batch, historical, fresh, k, need_precedent)
        gap = self._sampler_gap(batch, h)  # before any update: a run on a broken engine trains on nothing
        self._fill_advantages(batch)

        # 4. m passes of mini-batch updates over the shuffled batch.
        updates = []
        for _ in range(m):
            # a permutation of the global batch size, restricted to this process's rows: the generator advances as
            # in one process, so the next step's historical draw does not depend on N either
            order = torch.randperm(cfg.batch_size, generator=self.generator)
            order = order[order < len(batch)]
            for idx in order.split(cfg.mini_batch_size // world):
                updates.append(self.learner.update(batch.select(idx), kl_lambda))
                skipped = any(v for key, v in updates[-1].items() if key.startswith("skipped/"))
                self.consecutive_skips = self.consecutive_skips + 1 if skipped else 0
        self.rollout.resume_memory()
        self._sync_policy()

        # 5. Buffer: push every process's fresh groups, in rank order (the order of the global prompt draw), keep
        #    the last N policies (on-policy training stores nothing).
        if p > 0:
            self.buffer.add([g for part in dist.all_gather_objects(fresh) for g in part])
            self.buffer.evict_older_than(k - cfg.remix.history_window + 1)

        # 6. Rollout cost: fresh responses only, over all processes.
        self.rollouts += sum(fresh_per_rank) * G
        self.step = k
        if schedule.reincarnation_step(cfg) == k:
            self._reincarnate()
        t_done = time.perf_counter()
        return self._step_metrics(k, fresh, h, kl_lambda, need_precedent, texts, report, updates, batch, m, gap,
                                  {"generate": t_generated - t0, "grade": t_graded - t_generated,
                                   "learn": t_done - t_graded})

    def _sampler_gap(self, batch: TokenBatch, h: int) -> float:
        """Mean |engine - learner| log-prob per fresh token over all ranks (the learner's are pi_k's, whose samples
        these are). Raises RolloutFailed above --rollout.max-sampler-gap: the engine samples from other weights."""
        fresh_mask = batch.response_mask[h:]
        diff = (batch.fields["engine_logp"] - batch.fields["behav_logp"]).abs()[h:] * fresh_mask
        s = dist.sum_floats({"mismatch": float(diff.sum()), "fresh_tokens": float(fresh_mask.sum())})
        gap = s["mismatch"] / max(s["fresh_tokens"], 1.0)
        limit = self.cfg.rollout.max_sampler_gap
        if limit > 0 and gap > limit:
            raise RolloutFailed(
                f"step {self.step + 1}: the rollout engine's log-probs of its own samples differ from the learner's "
                f"by {gap:.3g} nats per token (--rollout.max-sampler-gap {limit:g}): it does not sample from the "
                "learner's weights (a weight sync that skipped or garbled weights?); the run stops before training "
                "on those samples")
        return gap

    def _fill_logprobs(self, batch: TokenBatch, historical: list[Group], fresh: list[Group], k: int,
                       need_precedent: bool) -> None:
        """prox (pi_k), behav, ref and prev log-probs of the batch. Where the KL to the precedent has weight
        0 (lambda = 1: steps 1-50 by default and always on-policy; or beta = 0) its forward pass is skipped
        and prev is set to ref, which leaves the loss and its gradient exactly unchanged (kl/prev is then
        not measured)."""
        mask, T = batch.response_mask, batch.response_mask.shape[1]
        groups = historical + fresh
        prox = self.learner.logprobs(batch, "current")
        # Fresh samples were generated by pi_k, so their behaviour log-probs are pi_k's (learner numbers).
        first_fresh = sum(len(g) for g in historical)
        fresh_behav = unpad_tokens(prox[first_fresh:], mask[first_fresh:])
        for j, g in enumerate(fresh):
            g.behav_logp = fresh_behav[j * len(g):(j + 1) * len(g)]
        behav = pad_tokens([t for g in groups for t in g.behav_logp], T)
        # pi_{k-1}'s log-probs of the samples it generated are their behaviour log-probs (spec 5.3).
        ref = self._reference_logprobs(batch, groups)
        if need_precedent:
            prev = behav.clone()
            need_prev = torch.nonzero(batch.fields["version"] != k - 1).squeeze(-1)
            if len(need_prev) or dist.world_size() > 1:  # a collective: every process calls it, with 0 rows too
                prev[need_prev] = self.learner.logprobs(batch.select(need_prev), "precedent")
        else:
            prev = ref
        if schedule.uses_precedent(self.cfg):  # a full weight copy: skipped where the precedent is never used
            self.learner.snapshot_precedent()  # pi_k becomes the precedent of step k + 1
        batch.fields.update(prox_logp=prox, behav_logp=behav, prev_logp=prev, ref_logp=ref,
                            engine_logp=pad_tokens([t for g in groups for t in g.engine_logp], T))

    def _reference_logprobs(self, batch: TokenBatch, groups: list[Group]) -> torch.Tensor:
        """Reference log-probs, cached with each group: valid until reincarnation clears the buffer."""
        starts = torch.tensor([0] + [len(g) for g in groups]).cumsum(0).tolist()
        missing = [(g, s) for g, s in zip(groups, starts) if g.ref_logp is None]
        if missing or dist.world_size() > 1:  # a collective: every process calls it, with 0 rows too
            rows = torch.cat([torch.arange(s, s + len(g)) for g, s in missing] or [torch.zeros(0, dtype=torch.long)])
            computed = unpad_tokens(self.learner.logprobs(batch.select(rows), "reference"), batch.response_mask[rows])
            pos = 0
            for g, _ in missing:
                g.ref_logp, pos = computed[pos:pos + len(g)], pos + len(g)
        return pad_tokens([t for g in groups for t in g.ref_logp], batch.response_mask.shape[1])

    def _fill_advantages(self, batch: TokenBatch) -> None:
        mask = batch.response_mask
        if self.cfg.algo == "grpo":
            batch.fields["advantages"] = batch.fields["seq_advantage"][:, None] * mask
            return
        # PPO: values and GAE recomputed with the current critic for every sample, fresh or old.
        values = self.learner.values(batch)
        lengths = mask.sum(-1)
        token_rewards = torch.zeros(mask.shape)
        token_rewards[torch.arange(len(batch)), (lengths - 1).clamp(min=0)] = batch.fields["reward"]
        adv, ret = gae(token_rewards, values, mask, self.cfg.ppo.gamma, self.cfg.ppo.lam)
        batch.fields.update(advantages=adv, old_values=values, returns=ret)

    def _reincarnate(self) -> None:
        """Policy reincarnation (section 6): the current policy becomes the reference; on-policy from now."""
        self.learner.reincarnate_reference()
        self.buffer.clear()
        if self.cfg.remix.reset_optimizer_at_reincarnation:
            self.learner.reset_optimizer()
        self.reincarnated_at = self.step

    # ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The loop's own state for a checkpoint (the learner saves its weights and optimizer itself)."""
        return {
            "step": self.step, "rollouts": self.rollouts, "reincarnated_at": self.reincarnated_at,
            "consecutive_skips": self.consecutive_skips, "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(), "rollout": self.rollout.state_dict(),
            # the learner's own draws on a GPU (LoRA dropout's masks): this process's device's generator
            "device_rng": self.learner.device_rng_state(),
            "data": self.train.state_dict(), "buffer": self.buffer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.rollouts = int(state["step"]), int(state["rollouts"])
        self.reincarnated_at = state["reincarnated_at"]
        self.consecutive_skips = int(state["consecutive_skips"])
        self.generator.set_state(state["generator"])
        self.rollout.load_state_dict(state["rollout"])
        self.train.load_state_dict(state["data"])
        self.buffer.load_state_dict(state["buffer"])
        self._sync_policy()  # the engine samples from the restored policy
        # last: the saved generators were taken after the uninterrupted run's own sync, so nothing this sync does
        # may move them (on XLA it runs graphs, and each graph XLA runs advances the device's seed)
        torch.set_rng_state(state["torch_rng"])
        self.learner.set_device_rng_state(state.get("device_rng"))

    def _sync_policy(self) -> None:
        """The learner's policy to the rollout engine: merged weights, or with --lora.sync adapter the LoRA adapter
        alone (the engine keeps the base weights)."""
        if self.cfg.lora.sync == "adapter":
            self.rollout.load_adapter(*self.learner.policy_adapter())
        else:
            self.rollout.load_weights(self.learner.policy_weights())

    # ---------------------------------------------------------------------------------------------
    def evaluate(self, batch_size: int = EVAL_PROMPTS_PER_CALL) -> dict[str, float]:
        """Greedy held-out reward (accuracy with the math reward) with the same rewards as training (each process
        evaluates every N-th problem; the counts are summed); the validation split's too, where there is one."""
        out = self._greedy_score(self.heldout, "heldout", batch_size)
        if self.validation:
            out.update(self._greedy_score(self.validation, "validation", batch_size))
        return out

    def _greedy_score(self, problems: list[EncodedProblem], name: str, batch_size: int) -> dict[str, float]:
        params = SamplingParams(temperature=0.0, max_new_tokens=self.cfg.rollout.max_new_tokens, n=1)
        mine = problems[dist.rank()::dist.world_size()]
        texts = []
        for s in range(0, len(mine), batch_size):  # chunks of prompts; the engine batches each as it can
            chunk = mine[s:s + batch_size]
            gens = self.rollout.generate([e.prompt_ids for e in chunk], params)
            texts += [self.tokenizer.decode(g[0].token_ids, skip_special_tokens=True) for g in gens]
        # a process with no problem (more processes than problems) adds zeros to the sums
        report = self.grader.grade(texts, [e.problem.row for e in mine]) if mine else \
            GradeReport(scores=[], names=self.grader.names)
        sums = dist.sum_floats({"reward": sum(report.scores), "n": len(mine), "timeouts": report.timeouts,
                                "errors": report.errors, "reflecting": count_reflecting(texts),
                                **{f"part/{n}": v for n, v in report.part_sums().items()}})
        out = {f"{name}/reward": sums["reward"] / sums["n"], f"{name}/timeouts": int(sums["timeouts"]),
               f"{name}/errors": int(sums["errors"]),
               # the paper's keyword measure on the greedy responses
               f"{name}/reflection_keyword_rate": sums["reflecting"] / sums["n"]}
        if self.reward_is_correctness:  # its mean is an accuracy
            out[f"{name}/accuracy"] = out[f"{name}/reward"]
        if len(report.names) > 1:
            out.update({f"{name}/reward/{n}": sums[f"part/{n}"] / sums["n"] for n in report.names})
        return out

    def _step_metrics(self, k, fresh, h, kl_lambda, need_precedent, texts, report, updates, batch, passes,
                      sampler_gap, times) -> dict[str, Any]:
        """The step's metrics over all processes: counts and sums are added across ranks, then divided."""
        s = dist.sum_floats({
            "responses": sum(len(g) for g in fresh), "historical": h,
            "reward": sum(x for g in fresh for x in g.rewards),
            **{f"part/{n}": v for n, v in report.part_sums().items()},
            "length": sum(len(r) for g in fresh for r in g.responses),
            "truncated": sum(f == "length" for g in fresh for f in g.finish_reasons),
            "reflecting": count_reflecting(texts), "texts": len(texts),
            "timeouts": report.timeouts, "errors": report.errors,
            "learner_tokens": float(batch.response_mask.sum()) * passes,
        })
        out: dict[str, Any] = {
            "step": k, "rollouts": self.rollouts, "reward/mean": s["reward"] / s["responses"],
            # each --reward function's mean (before its weight) on this step's fresh responses
            **{f"reward/{n}/mean": s[f"part/{n}"] / s["responses"] for n in report.names},
            "response_length/mean": s["length"] / s["responses"],
            "response/truncated_frac": s["truncated"] / s["responses"],
            # the paper's keyword measure on this step's fresh training samples (temperature as trained)
            "reflection/keyword_rate": s["reflecting"] / s["texts"],
            "historical_share": s["historical"] / self.cfg.batch_size, "kl_lambda": kl_lambda,
            "skipped/consecutive": self.consecutive_skips,
            "buffer/responses": self.buffer.num_responses(),  # every process holds the whole buffer
            # true at the one step after which the reference became the current policy (on-policy from k + 1)
            "reincarnated": self.reincarnated_at == k,
            "grader/timeouts": int(s["timeouts"]), "grader/errors": int(s["errors"]),
            # Sampler/learner mismatch on the fresh samples: engine log-probs against the learner's.
            "sampler/logp_abs_diff": sampler_gap,
            # response tokens the optimizer trained on this step (fresh + historical, times the m passes)
            "learner/tokens": int(s["learner_tokens"]),
        }
        for key in updates[0]:  # the learner's metrics are already over all ranks
            vals = [u[key] for u in updates]
            out[key] = sum(vals) if key.startswith("skipped/") else sum(vals) / len(vals)
        if not need_precedent:
            del out["kl/prev"]  # not measured: prev was set to ref (see _fill_logprobs)
        if self.cfg.objective.rollout_correction != "none":
            out.update(self._correction_metrics(batch, h))
        out.update({f"time/{k_}": v for k_, v in times.items()})
        return out

    def _correction_metrics(self, batch: TokenBatch, h: int) -> dict[str, float]:
        """--objective.rollout-correction on this step's batch, for its fresh and its historical samples over all
        processes: the mean weight per token, the share of tokens it truncated (token-tis) or of sequences it
        dropped (seq-mis, geo-mis)."""
        weight, cut = rollout_correction_weights(batch.fields["behav_logp"], batch.fields["engine_logp"],
                                                 batch.response_mask, self.cfg.objective)
        mask = batch.response_mask
        parts = (("fresh", slice(h, None)), ("historical", slice(0, h)))
        s = dist.sum_floats({f"{name}/{key}": value for name, rows in parts for key, value in (
            ("weight", float(weight[rows].sum())), ("tokens", float(mask[rows].sum())),
            ("cut_tokens", float(cut[rows].sum())), ("seqs", float(mask[rows].shape[0])),
            ("cut_seqs", float(cut[rows].any(-1).sum())))})  # one collective for both parts
        out = {}
        for name, _ in parts:
            if s[f"{name}/seqs"] == 0:
                continue
            tokens = max(s[f"{name}/tokens"], 1.0)
            out[f"rollout_correction/{name}/weight_mean"] = s[f"{name}/weight"] / tokens
            if self.cfg.objective.rollout_correction == "token-tis":
                out[f"rollout_correction/{name}/truncated_frac"] = s[f"{name}/cut_tokens"] / tokens
            else:
                out[f"rollout_correction/{name}/masked_frac"] = s[f"{name}/cut_seqs"] / s[f"{name}/seqs"]
        return out
