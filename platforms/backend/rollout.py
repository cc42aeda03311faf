"""TorchRollout: batched sampling with a transformers model on any torch device (the reference Rollout).

A hand-written decode loop over the model's KV cache rather than `generate()`, so that the engine's
per-token log-probs are exactly those of the distribution that was sampled (logits / temperature,
top-p) and positions match the learner's (left padding, position = running count of real tokens).
Each process of a multi-process run holds its own full copy and samples its own share of the prompts.

Two layouts of the same loop (`DecodePlan`):

- dynamic (the CPU default): the KV cache grows by one token per step, rows that finished leave the batch
  (once an eighth of it has), the loop stops as soon as every row has finished. Shapes change every step,
  which costs nothing in eager mode on a CPU. Small models decode in wider batches (`_rows_per_batch`).
- static (CUDA, XLA): a preallocated KV cache (transformers' `StaticCache`) of one length for the whole
  run (`cache_tokens`: the longest prompt bucket plus --rollout.max-new-tokens, set by the platform from
  the config; a call that needs more grows it, and it never shrinks), prompts left-padded to a multiple of
  `prompt_multiple`, the batch padded to one of three row buckets (`batch_bucket`). A decode step then has
  one shape per row bucket: at most three graphs per run, well under torch.compile's recompile limit (8),
  past which it would decode eagerly. It is `torch.compile`d (on CUDA with CUDA graphs, mode
  "reduce-overhead"; on XLA with the openxla backend), and attends grouped-query heads without expanding
  the cache (platforms/backend/attention.py). Tokens are kept in a list of per-step tensors (no in-place
  writes at a varying index), and whether every row has finished is read from the device only every
  `sync_every` steps. Pad rows are sampled with the real ones (at u = 0, finished from the start) and
  dropped at the end; a batch's uniforms are drawn at once for its real rows, so the generator draws exactly
  what the dynamic layout draws: on the CPU both give the same tokens and log-probs
  (tests/unit/test_static_decode.py).

Sampling draws its uniforms from one host generator on every device, so a run samples the same numbers on the
CPU, on any GPU model (CUDA's generator output depends on the number of SMs) and on XLA, and a checkpoint's
generator state resumes anywhere. They go to the device once per batch ([rows, max_new_tokens] floats).

Memory between generations (`release_memory`, called while the learner works): the dynamic layout holds
nothing. The static caches are freed, except under CUDA graphs (compiled decode on CUDA): a recorded graph
reads its cache at fixed addresses, and a new allocation would be recorded again on every step. There the
caches stay (one per row bucket in use, at most 1 + 1/4 + 1/16 of the largest); SGLang's engine, which
releases its KV cache by remapping memory under the same addresses, is the choice where that memory counts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, StaticCache

from platforms.backend.attention import use_grouped_decode_attention
from platforms.backend.kv_cache import cache_tensors, kv_bytes_per_token, new_static_cache
from platforms.backend.parallel import to_device_keeping_ties
from remix.batching import positions_of
from remix.interfaces import Generation, Rollout, SamplingParams


def stop_token_ids(generation_config, tokenizer) -> set[int]:
    """End-of-turn / end-of-text ids from the model's generation config and the tokenizer."""
    ids: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    for value in (eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    if not ids:
        raise ValueError("the model defines no eos token: generation could never stop")
    return ids


def is_stop(token: torch.Tensor, stop: torch.Tensor) -> torch.Tensor:
    """token [B] -> [B] bool, whether each is one of the stop ids `stop` [S]: torch.isin's answer, in ops every
    device lowers (torch-xla has no isin: it ran on the host at every decode token, a device round trip each)."""
    return (token[:, None] == stop[None, :]).any(dim=1)


def pad_token_id(tokenizer, stop_ids: set[int]) -> int:
    """The tokenizer's pad id, or the lowest stop id where it has none (finished rows decode it)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)


@dataclass(frozen=True)
class DecodePlan:
    """How the decode loop is laid out (see the module docstring). The default is the dynamic layout."""

    static_cache: bool = False
    compile: bool = False  # torch.compile the one-token decode step (static layout only)
    compile_backend: str | Callable = "inductor"  # torch.compile's backend (tests count graphs with their own)
    prompt_multiple: int = 64  # static: prompts are left-padded to a multiple of this many tokens
    cache_tokens: int = 0  # static: the KV cache's length for the run (0: the first call's need, grown as needed)
    sync_every: int = 1  # static: read "has every row finished?" from the device every this many tokens
    mark_step: Callable[[], None] | None = None  # XLA: cut the lazy graph after the prefill and each step
    # XLA SPMD: shards a tensor along its rows over the mesh (the decode's inputs and KV cache), else None
    shard_rows: Callable[[torch.Tensor], None] | None = None
    compact_finished: bool = True  # dynamic: rows that finished leave the batch (once an eighth of it has)
    wide_batch_kv_bytes: int = 256 << 20  # dynamic: more than max_batch rows while their KV cache fits in this
    wide_batch_rows: int = 512  # dynamic: the most rows a wide batch takes

    def __post_init__(self) -> None:
        if self.compile and not self.static_cache:
            raise ValueError("DecodePlan: compile=True needs static_cache=True (one shape per bucket)")
        if self.prompt_multiple < 1 or self.sync_every < 1 or self.cache_tokens < 0:
            raise ValueError("DecodePlan: prompt_multiple and sync_every must be >= 1, cache_tokens >= 0")


def batch_bucket(n: int, max_batch: int) -> int:
    """The static layout's batch size for n rows: the smallest of max_batch / 16, max_batch / 4 and max_batch
    that holds them. Three buckets, not a power of two each: every bucket is one more compiled graph (and one
    more cache), and torch.compile gives up after 8 per function. A batch of a sixteenth or a quarter pads at
    most 4x its rows; a decode step's time is mostly the weights' reads, which do not grow with rows."""
    if n > max_batch:
        return n
    return next(b for b in (max(max_batch // 16, 1), max(max_batch // 4, 1), max_batch) if b >= n)


def left_pad(prompts: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts) if width is None else width
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def sample_next(logits: torch.Tensor, params: SamplingParams, u: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens and their log-probs under the sampled distribution (greedy when temperature is 0).

    Sampling is by the inverse of the cumulative distribution at one uniform `u` [n] per row, on the logits'
    device: the same arithmetic on every device, so every platform draws what the CPU reference draws from
    the same distribution, up to rounding at the edges between tokens."""
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
    p = logp.exp()
    cdf = p.cumsum(dim=-1)
    # The first token of positive probability whose cumulative probability exceeds u (argmax of a mask, not
    # searchsorted: it lowers everywhere). A parallel scan (CUDA) need not be monotone at rounding edges, so a
    # token of probability 0 (underflowed, or cut by top-p) is excluded explicitly; where rounding leaves no
    # token above u * total, the last token of positive probability is taken.
    positive = p > 0
    hit = (cdf > (u * cdf[:, -1])[:, None]) & positive
    last = positive.int().cumsum(dim=-1).argmax(dim=-1)
    token = torch.where(hit.any(dim=-1), hit.int().argmax(dim=-1), last)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


class TorchRollout(Rollout):
    """Samples with the model in `dtype` on `device`, with a generator of that device seeded by `seed`
    (its state is checkpointed, so a resumed run samples what the uninterrupted one would have)."""

    def __init__(self, model_dir: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", platform: str = "cpu", max_batch: int = 64,
                 decode: DecodePlan | None = None) -> None:
        self.platform = platform
        self.decode = decode or DecodePlan()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        self.model = to_device_keeping_ties(model, self.device).eval()
        self.model.requires_grad_(False)
        self.stop_ids = stop_token_ids(self.model.generation_config, self.tokenizer)
        self.pad_id = pad_token_id(self.tokenizer, self.stop_ids)
        # the host's generator on every device (module docstring): the same samples on any hardware
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.max_batch = max_batch
        if self.decode.static_cache:  # one query token per step: keep grouped-query heads grouped (attention.py)
            use_grouped_decode_attention(self.model)
        # transformers 5 renamed `past_key_values` to `cache`; accept both generations of the API.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        # transformers 4 writes a StaticCache at explicit cache positions; 5 keeps the count in the cache
        self._takes_cache_position = "cache_position" in params
        self._caches: dict[int, StaticCache] = {}  # static layout: one cache per row bucket, all of one length
        self._cache_tokens = self.decode.cache_tokens
        # CUDA graphs where there are any (with the inductor backend; tests count graphs with lighter backends)
        self._cuda_graphs = self.decode.compile and self.device.type == "cuda" and \
            self.decode.compile_backend == "inductor"
        self._step = torch.compile(self._forward_last, dynamic=False, backend=self.decode.compile_backend,
                                   mode="reduce-overhead" if self._cuda_graphs else None) if self.decode.compile \
            else self._forward_last

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies each streamed weight into place as it arrives (cast to this engine's dtype and device);
        no full second copy of the weights is ever held. Every weight must arrive, and no unknown one."""
        # keep_vars: the parameters themselves. A plain state_dict holds detached aliases, and on XLA an in-place
        # copy into such an alias never reaches the parameter (lazy tensors share no storage).
        own = self.model.state_dict(keep_vars=True)
        missing = set(own)
        for name, tensor in weights:
            if name not in own:
                raise KeyError(f"load_weights: the rollout model has no weight named {name!r}")
            own[name].copy_(tensor)
            missing.discard(name)
        if missing:
            raise KeyError(f"load_weights: {len(missing)} weights never arrived, e.g. {sorted(missing)[:3]}")
        if self.decode.mark_step:  # XLA: run the copies now, not as part of the next generation's first graph
            self.decode.mark_step()

    def release_memory(self) -> None:
        """Frees the static KV caches while the learner works (module docstring), unless CUDA graphs hold them."""
        if self._caches and not self._cuda_graphs:
            self._caches.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        flat = [p for p in prompts for _ in range(params.n)]
        out: list[Generation] = []
        rows = self._rows_per_batch(flat, params)
        for start in range(0, len(flat), rows):
            out.extend(self._generate_batch(flat[start:start + rows], params))
        return [out[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    def _rows_per_batch(self, flat: list[list[int]], params: SamplingParams) -> int:
        """max_batch rows, or in the dynamic layout more (up to plan.wide_batch_rows) while the whole batch's KV
        cache stays within plan.wide_batch_kv_bytes: a small model with short responses (the tests, the CPU
        study) is bound by the cost of each decode call and of growing the cache, not by arithmetic
        (docs/benchmarks/greedy_eval.md). A large model's batches keep max_batch rows: its memory is as it was."""
        plan = self.decode
        if plan.static_cache or not flat:
            return self.max_batch  # a static cache is allocated for max_batch rows, whatever the model
        row_bytes = kv_bytes_per_token(self.model.config, self.model.dtype) * (
            max(map(len, flat)) + params.max_new_tokens)
        return max(self.max_batch, min(plan.wide_batch_rows, plan.wide_batch_kv_bytes // row_bytes))

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if self.decode.static_cache:
            return self._generate_static(prompts, params)
        return self._generate_dynamic(prompts, params)

    @torch.no_grad()
    def _generate_dynamic(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        ids, mask = left_pad(prompts, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        n, new = len(prompts), params.max_new_tokens
        positions = positions_of(mask)
        cache = DynamicCache()
        # Outputs by original row; the loop works on the rows still decoding (`live`, indices into them).
        tokens = torch.full((n, new), self.pad_id, dtype=torch.long, device=self.device)
        logps = torch.zeros((n, new), dtype=torch.float32, device=self.device)
        live = torch.arange(n, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        stop = torch.tensor(sorted(self.stop_ids), device=self.device)
        step_ids, step_pos = ids, positions
        uniforms = self._uniforms(n, params)
        steps = 0
        for step in range(new):
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True,
                                logits_to_keep=1, **{self._cache_kwarg: cache}).logits[:, -1]
            u = None if uniforms is None else uniforms[live.to(uniforms.device), step].to(self.device)  # no-ops off XLA
            token, logp = sample_next(logits, params, u)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens[live, step], logps[live, step] = token, logp
            steps = step + 1
            done = done | is_stop(token, stop)
            finished = int(done.sum())  # the one read from the device per token (end of loop, compaction)
            if finished == len(live) or step + 1 == new:
                break
            # Rows that finished keep decoding pads whose outputs are discarded, until an eighth of the rows
            # still decoding have finished: then they leave the batch and its cache (a copy of the cache, which
            # costs about one decode step). Rows are independent: the others' tokens stay the same, their log-probs
            # up to the last bits of a matrix product over fewer rows (tests/unit/test_static_decode.py).
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=self.device)], dim=1)
            step_ids, step_pos = token[:, None], step_pos[:, -1:] + 1
            if self.decode.compact_finished and finished * 8 >= len(live):
                keep = (~done).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live, mask, done = live[keep], mask[keep], done[keep]
                step_ids, step_pos = step_ids[keep], step_pos[keep]
        tokens, logps = tokens[:, :steps].cpu(), logps[:, :steps].cpu()
        return [self._to_generation(tokens[i], logps[i]) for i in range(n)]

    def _uniforms(self, n: int, params: SamplingParams, pad_rows: int = 0) -> torch.Tensor | None:
        """[n + pad_rows, max_new_tokens] uniforms for a batch, drawn on the host at once for its n real rows (pad
        rows get zeros), so that the generator's stream does not depend on how many steps the loop ran (the
        static layout notices finished rows only every sync_every steps) nor on the device. They go to the
        device in one copy, where each step takes its column; on XLA they stay on the host and each step sends
        its column (a column sliced on the device would be a constant of the step's graph, one graph per step)."""
        if params.temperature == 0:
            return None
        u = torch.rand((n, params.max_new_tokens), generator=self.generator)
        if pad_rows:
            u = torch.cat([u, torch.zeros((pad_rows, params.max_new_tokens))])
        return u if self.device.type == "xla" else u.to(self.device)  # a lazy device: kept on the host

    def _forward_last(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                      cache_position: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        """float32 logits [rows, V] of the last position (the compiled decode step in the static layout)."""
        extra = {"cache_position": cache_position} if self._takes_cache_position else {}
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          logits_to_keep=1, **{self._cache_kwarg: cache}, **extra).logits[:, -1].float()

    def _static_cache(self, rows: int, needed: int) -> StaticCache:
        """The preallocated cache of `rows` rows, emptied. Every cache has the run's one length (module docstring):
        a call needing more than it replaces them all by longer ones (rounded up to a power of two where the
        platform set no length), so lengths only grow."""
        if needed > self._cache_tokens:
            self._caches.clear()  # free the old ones before allocating longer ones
            self._cache_tokens = needed if self.decode.cache_tokens else 1 << (needed - 1).bit_length()
        cache = self._caches.get(rows)
        if cache is None:
            cache = self._caches[rows] = new_static_cache(self.model, rows, self._cache_tokens)
        else:
            cache.reset()
        return cache

    @torch.no_grad()
    def _generate_static(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        n, plan, dev = len(prompts), self.decode, self.device
        rows = batch_bucket(n, self.max_batch)
        width = -(-max(len(p) for p in prompts) // plan.prompt_multiple) * plan.prompt_multiple
        # Pad rows hold one real token, so that no attention row is entirely masked (NaN-free). They are sampled
        # with the real rows (every tensor of a step has the batch bucket's shape: one graph per bucket, whatever
        # n), at u = 0 and finished from the start, and dropped on the host at the end.
        ids, mask = left_pad(prompts + [[self.pad_id]] * (rows - n), self.pad_id, width)
        new = params.max_new_tokens
        cache = self._static_cache(rows, width + new)
        # Every slot after the prompt is visible in the 2-D mask: causality hides the ones not yet written, and
        # the mask has the cache's length, whatever this call's prompt width (one decode graph per row bucket).
        full_mask = torch.cat([mask, torch.ones((rows, self._cache_tokens - width), dtype=mask.dtype)], dim=1).to(dev)
        ids, positions = ids.to(dev), positions_of(mask).to(dev)
        if plan.shard_rows:  # SPMD: each device decodes its share of the rows, with their share of the cache
            for t in (ids, full_mask, positions):
                plan.shard_rows(t)
        logits = self._forward_last(ids, full_mask, positions, torch.arange(width, device=dev), cache)  # prefill
        if plan.shard_rows:  # the cache exists from the prefill on (transformers 5 allocates it at its first update)
            for t in cache_tensors(cache):
                plan.shard_rows(t)
        if plan.mark_step:
            plan.mark_step()
        stop = torch.tensor(sorted(self.stop_ids), device=dev)
        done = (torch.arange(rows) >= n).to(dev)
        step_pos, cache_position = positions[:, -1:], torch.tensor([width], device=dev)
        tokens, logps = [], []
        uniforms = self._uniforms(n, params, pad_rows=rows - n)  # drawn for the n real rows only
        for j in range(new):
            token, logp = sample_next(logits, params, None if uniforms is None else uniforms[:, j].to(dev))
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens.append(token)
            logps.append(logp)
            done = done | is_stop(token, stop)
            if j + 1 == new or ((j + 1) % plan.sync_every == 0 and bool(done.all())):
                break
            step_pos = step_pos + 1
            logits = self._step(token[:, None], full_mask, step_pos, cache_position, cache)
            cache_position = cache_position + 1
            if plan.mark_step:
                plan.mark_step()
        # Stacked as `new` steps whatever step the loop stopped at (one graph per length bucket on XLA), cropped
        # on the host: rows past the stop hold pads, which _to_generation never reads.
        filler = torch.full_like(tokens[0], self.pad_id), torch.zeros_like(logps[0])
        tokens_t = torch.stack(tokens + [filler[0]] * (new - len(tokens)), 1).cpu()[:n, :len(tokens)]
        logps_t = torch.stack(logps + [filler[1]] * (new - len(logps)), 1).cpu()[:n, :len(logps)]
        return [self._to_generation(tokens_t[i], logps_t[i]) for i in range(n)]

    def _to_generation(self, tokens: torch.Tensor, logps: torch.Tensor) -> Generation:
        toks = tokens.tolist()
        for j, t in enumerate(toks):
            if t in self.stop_ids:  # keep the stop token: the policy is trained to emit it
                return Generation(toks[:j + 1], logps[:j + 1].tolist(), "stop")
        return Generation(toks, logps.tolist(), "length")
