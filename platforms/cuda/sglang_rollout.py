"""SGLangRollout: SGLang's offline engine in this process's GPU, colocated with the learner (one engine per rank).

Pinned release: sglang==0.5.20 (the `cuda` extra), the one that pins torch==2.13.0 as this project does, so one
environment holds both. Written against that release's source; tests/contract/test_sglang_contract.py reads the
wheel and checks that every function, method and keyword used here (through `SGLangAPI` and the fake engine of
tests/unit/test_sglang_rollout.py, which has the same names) exists there. **Not executed on a GPU yet**: SGLang's
kernels need one, and the GPU lent to some sessions has no package registry to install it from. What ran is this
module against that fake engine.

What SGLang is asked to do, and why:

- `Engine.generate(input_ids=..., sampling_params=[...], return_logprob=True)`: one request per response, with
  top_k = -1 and the run's temperature and top_p (training validates top_p = 1, which the learner can
  represent). Tokens and log-probs come from `meta_info["output_token_logprobs"]` (logprob, token id, text):
  the log-probs of the distribution sampled from, after temperature, as long as SGLANG_RETURN_ORIGINAL_LOGPROB
  is not set (it would return the untempered ones; refused at start).
- Weights: the learner's stream of (name, full tensor on this GPU) is cut into buckets of about
  `bucket_mb` MiB, each flattened into one uint8 tensor (`FlattenedTensorBucket`) and handed to the engine's
  scheduler process by CUDA IPC (`MultiprocessingSerializer`, no host round trip) with
  `update_weights_from_tensor(load_format="flattened_bucket", flush_cache=False)`; after the last bucket,
  `flush_cache()` drops the prefix cache computed with the old weights.
- Every update and flush answers whether it succeeded; a failure stops the run (RuntimeError with SGLang's
  message) rather than sample from old or half-updated weights.
- Memory: the engine starts with `enable_memory_saver=True`; `release_memory_occupation(tags=[kv_cache, weights])`
  after generating frees its weights and KV cache for the learner. Before the new weights arrive, the learner's
  cached free blocks go back to the driver (`torch.cuda.empty_cache`) and only the weights are taken back; the
  KV cache is taken back after the sync, so the sync's peak holds no KV cache (verl's order), then flushed.
- Reproducibility: every request gets a `sampling_seed` drawn from this rollout's own generator (checkpointed).
  SGLang honours it only with `--rollout.sglang-deterministic` (enable_deterministic_inference); otherwise a
  resumed run samples other responses than an uninterrupted one would.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from platforms.backend.rollout import pad_token_id, stop_token_ids
from remix.interfaces import Generation, Rollout, SamplingParams

SGLANG_VERSION = "0.5.20"
MEMORY_TAGS = ["kv_cache", "weights"]  # sglang.srt.constants GPU_MEMORY_TYPE_KV_CACHE, GPU_MEMORY_TYPE_WEIGHTS


@dataclass(frozen=True)
class SGLangAPI:
    """The four pieces of SGLang this module uses (a fake with the same names stands in for it in the tests)."""

    Engine: Any  # sglang.srt.entrypoints.engine.Engine
    FlattenedTensorBucket: Any  # sglang.srt.weight_sync.tensor_bucket.FlattenedTensorBucket
    MultiprocessingSerializer: Any  # sglang.srt.utils.MultiprocessingSerializer
    monkey_patch_torch_reductions: Any  # sglang.srt.utils.patch_torch.monkey_patch_torch_reductions

    @classmethod
    def load(cls) -> SGLangAPI:
        """Imports SGLang (raises ModuleNotFoundError where it is not installed)."""
        from sglang.srt.entrypoints.engine import Engine
        from sglang.srt.utils import MultiprocessingSerializer
        from sglang.srt.utils.patch_torch import monkey_patch_torch_reductions
        from sglang.srt.weight_sync.tensor_bucket import FlattenedTensorBucket

        return cls(Engine, FlattenedTensorBucket, MultiprocessingSerializer, monkey_patch_torch_reductions)


def buckets(weights: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, dtype: torch.dtype
            ) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Groups the stream into lists of about `bucket_bytes` (a tensor larger than that is a bucket of its own),
    each tensor cast to the engine's dtype. Only one bucket is held at a time."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in weights:
        t = tensor.detach().to(dtype).contiguous()
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket


class SGLangRollout(Rollout):
    def __init__(self, model_dir: str | Path, *, seed: int = 0, dtype: str = "bfloat16", gpu: int = 0,
                 mem_fraction: float = 0.5, bucket_mb: int = 512, deterministic: bool = False,
                 api: SGLangAPI | None = None, platform: str = "cuda") -> None:
        if os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB", "").lower() in ("1", "true", "yes", "y"):
            raise ValueError("SGLANG_RETURN_ORIGINAL_LOGPROB is set: SGLang would return log-probs before "
                             "temperature, which are not those of the distribution sampled from; unset it")
        self.platform = platform
        self.api = api or SGLangAPI.load()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.stop_ids = stop_token_ids(GenerationConfig.from_pretrained(model_dir), self.tokenizer)
        self.pad_id = pad_token_id(self.tokenizer, self.stop_ids)
        self.dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
        self.bucket_bytes = bucket_mb * 2**20
        # A tied LM head is the embedding under a second name: SGLang's models skip it, so it is not sent
        # (at Qwen2.5-1.5B that is 467 MB of bf16 less per sync).
        tied = getattr(AutoConfig.from_pretrained(model_dir), "tie_word_embeddings", False)
        self.skipped_weights = {"lm_head.weight"} if tied else set()
        self.generator = torch.Generator().manual_seed(seed)  # per-request seeds; its state is checkpointed
        self.released: set[str] = set()  # memory tags released to the learner
        self.engine = self.api.Engine(
            model_path=str(model_dir), dtype=dtype, tp_size=1, base_gpu_id=gpu,
            port=30000 + 10 * gpu,  # one engine per GPU of a node: keep their ports apart
            mem_fraction_static=mem_fraction, enable_memory_saver=True, random_seed=seed,
            skip_tokenizer_init=True,  # token ids in, token ids out: our tokenizer and chat template
            enable_deterministic_inference=deterministic, log_level="error",
        )

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        if self.released:
            raise RuntimeError(f"SGLangRollout.generate while {sorted(self.released)} are released: call resume_memory "
                               "and load_weights first")
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        flat = [p for p in prompts for _ in range(params.n)]
        # greedy draws nothing, like the torch engine: evaluations leave the training samples' seeds alone
        seeds = torch.randint(0, 2**31 - 1, (len(flat),), generator=self.generator).tolist() \
            if params.temperature > 0 else [None] * len(flat)
        sampling = [{"temperature": params.temperature, "top_p": params.top_p, "top_k": -1,
                     "max_new_tokens": params.max_new_tokens, "stop_token_ids": sorted(self.stop_ids),
                     "sampling_seed": s} for s in seeds]
        outputs = self.engine.generate(input_ids=flat, sampling_params=sampling, return_logprob=True)
        gens = [self._to_generation(o) for o in outputs]
        return [gens[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    @staticmethod
    def _to_generation(output: dict) -> Generation:
        meta = output["meta_info"]
        reason = meta["finish_reason"]["type"]
        if reason not in ("stop", "length"):
            raise RuntimeError(f"SGLang finished a request with {meta['finish_reason']!r}")
        pairs = meta["output_token_logprobs"]
        return Generation([int(t) for _, t, _ in pairs], [float(lp) for lp, _, _ in pairs], reason)

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.api.monkey_patch_torch_reductions()  # CUDA IPC handles that survive the hand-over between processes
        sent = ((name, t) for name, t in weights if name not in self.skipped_weights)  # still iterated to the end
        for bucket in buckets(sent, self.bucket_bytes, self.dtype):
            flat = self.api.FlattenedTensorBucket(named_tensors=bucket)
            payload = {"flattened_tensor": flat.get_flattened_tensor(), "metadata": flat.get_metadata()}
            # one serialized payload per tensor-parallel rank of the engine (tp_size = 1)
            serialized = self.api.MultiprocessingSerializer.serialize(payload, output_str=True)
            ok, message = self.engine.update_weights_from_tensor(named_tensors=[serialized],
                                                                 load_format="flattened_bucket", flush_cache=False)
            if not ok:
                raise RuntimeError(f"SGLang refused a weight update ({len(bucket)} tensors from {bucket[0][0]!r}): "
                                   f"{message}")
        if "kv_cache" in self.released:
            self.engine.resume_memory_occupation(tags=["kv_cache"])
            self.released.discard("kv_cache")
        # The prefix cache indexes keys and values of the old weights (and, after a release, pages whose content
        # is gone): flushed once, after the last bucket and with the KV cache back.
        flushed = self.engine.flush_cache()
        if not flushed.success:
            raise RuntimeError(f"SGLang could not flush its prefix cache after the weight update: {flushed.message}")

    def release_memory(self) -> None:
        if not self.released:
            self.engine.release_memory_occupation(tags=MEMORY_TAGS)
            self.released = set(MEMORY_TAGS)

    def resume_memory(self) -> None:
        """Takes the weights back (the KV cache follows in load_weights, after the sync)."""
        if "weights" in self.released:
            import gc

            gc.collect()
            torch.cuda.empty_cache()  # the learner's cached free blocks, for the engine's process to take
            self.engine.resume_memory_occupation(tags=["weights"])
            self.released.discard("weights")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def shutdown(self) -> None:
        self.engine.shutdown()
