"""TorchRollout: batched sampling with a transformers model on any torch device (the reference Rollout).

A hand-written decode loop over the model's KV cache rather than `generate()`, so that the engine's
per-token log-probs are exactly those of the distribution that was sampled (logits / temperature,
top-p) and positions match the learner's (left padding, position = running count of real tokens).
Each process of a multi-process run holds its own full copy and samples its own share of the prompts.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from remix.batching import positions_of
from remix.interfaces import Generation, Rollout, SamplingParams


def stop_token_ids(model, tokenizer) -> set[int]:
    """End-of-turn / end-of-text ids from the generation config and the tokenizer."""
    ids: set[int] = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    if not ids:
        raise ValueError("the model defines no eos token: generation could never stop")
    return ids


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens and their log-probs under the sampled distribution (greedy when temperature is 0)."""
    logits = logits.float()
    if params.temperature == 0:
        logp = torch.log_softmax(logits, dim=-1)
        token = logits.argmax(dim=-1)
        return token, logp.gather(-1, token[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_logp, order = logp.sort(dim=-1, descending=True)
        cum = sorted_logp.exp().cumsum(dim=-1)
        drop = cum - sorted_logp.exp() > params.top_p  # keep the smallest prefix reaching top_p
        sorted_logp = sorted_logp.masked_fill(drop, float("-inf"))
        logp = torch.full_like(logp, float("-inf")).scatter(-1, order, sorted_logp)
        logp = torch.log_softmax(logp, dim=-1)
    token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


class TorchRollout(Rollout):
    """Samples with the model in `dtype` on `device`, with a generator of that device seeded by `seed`
    (its state is checkpointed, so a resumed run samples what the uninterrupted one would have)."""

    def __init__(self, model_dir: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", platform: str = "cpu", max_batch: int = 64) -> None:
        self.platform = platform
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.model.requires_grad_(False)
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.stop_ids)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.max_batch = max_batch
        # transformers 5 renamed `past_key_values` to `cache`; accept both generations of the API.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies each streamed weight into place as it arrives (cast to this engine's dtype and device);
        no full second copy of the weights is ever held. Every weight must arrive, and no unknown one."""
        own = self.model.state_dict()
        missing = set(own)
        for name, tensor in weights:
            if name not in own:
                raise KeyError(f"load_weights: the rollout model has no weight named {name!r}")
            own[name].copy_(tensor)
            missing.discard(name)
        if missing:
            raise KeyError(f"load_weights: {len(missing)} weights never arrived, e.g. {sorted(missing)[:3]}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        flat = [p for p in prompts for _ in range(params.n)]
        out: list[Generation] = []
        for start in range(0, len(flat), self.max_batch):
            out.extend(self._generate_batch(flat[start:start + self.max_batch], params))
        return [out[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        ids, mask = left_pad(prompts, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        n = len(prompts)
        positions = positions_of(mask)
        cache = DynamicCache()
        tokens = torch.empty((n, 0), dtype=torch.long, device=self.device)
        logps = torch.empty((n, 0), dtype=torch.float32, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        stop = torch.tensor(sorted(self.stop_ids), device=self.device)
        step_ids, step_pos = ids, positions
        for _ in range(params.max_new_tokens):
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True,
                                logits_to_keep=1, **{self._cache_kwarg: cache}).logits[:, -1]
            token, logp = sample_next(logits, params, self.generator)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens = torch.cat([tokens, token[:, None]], dim=1)
            logps = torch.cat([logps, logp[:, None]], dim=1)
            done = done | torch.isin(token, stop)
            if bool(done.all()):
                break
            # Rows that finished keep decoding pads whose outputs are discarded; their mask is moot.
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], dim=1)
            step_ids, step_pos = token[:, None], step_pos[:, -1:] + 1
        tokens, logps = tokens.cpu(), logps.cpu()
        return [self._to_generation(tokens[i], logps[i]) for i in range(n)]

    def _to_generation(self, tokens: torch.Tensor, logps: torch.Tensor) -> Generation:
        toks = tokens.tolist()
        for j, t in enumerate(toks):
            if t in self.stop_ids:  # keep the stop token: the policy is trained to emit it
                return Generation(toks[:j + 1], logps[:j + 1].tolist(), "stop")
        return Generation(toks, logps.tolist(), "length")
