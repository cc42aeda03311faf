"""SGLangRollout: SGLang's offline engine in this process's GPU, colocated with the learner (one engine per rank).

Pinned release: sglang==0.5.20 (the `cuda` extra), the one that pins torch==2.13.0 as this project does, so one
environment holds both. Written against that release's source; tests/contract/test_sglang_contract.py reads the
wheel and checks that every function, method and keyword used here (through `SGLangAPI` and the fake engine of
tests/unit/test_sglang_rollout.py, which has the same names) exists there. **Not executed on a GPU yet**: SGLang's
kernels need one, and the GPU lent to some sessions has no package registry to install it from. What ran is this
module against that fake engine.

What SGLang is asked to do, and why:

- The engine samples with bf16 weights whatever --model.dtype says: its default attention kernels (FA3 on
  Hopper, FlashInfer elsewhere) take fp16/bf16 only, and a float32 engine fails while capturing its CUDA graphs
  at start-up. A float32 learner keeps float32; the run says so in one line.
- `Engine.generate(input_ids=..., sampling_params=[...], return_logprob=True)`: one request per response, with
  top_k = -1 and the run's temperature and top_p (training validates top_p = 1, which the learner can
  represent). Tokens and log-probs come from `meta_info["output_token_logprobs"]` (logprob, token id, text),
  checked against `output_ids`: the log-probs of the distribution sampled from, after temperature, as long
  as SGLANG_RETURN_ORIGINAL_LOGPROB is not set (it would return the untempered ones; refused at start). A
  request that SGLang ended on its NaN path (`matched == "NaN happened"`, where it rewrites the sampled id
  to a stop token) is an error, not a sample.
- Weights: the learner's stream of (name, full tensor on this GPU) is cut into buckets of about
  `bucket_mb` MiB, each flattened into one uint8 tensor (`FlattenedTensorBucket`) and handed to the engine's
  scheduler process by CUDA IPC (`MultiprocessingSerializer`, no host round trip) with
  `update_weights_from_tensor(load_format="flattened_bucket", flush_cache=False)`; after the last bucket,
  `flush_cache()` drops the prefix cache computed with the old weights.
- What a failed update really does in 0.5.20: the load runs in the scheduler process without a try, so an
  exception there (a shape that does not fit, a bad IPC handle) kills the scheduler, which signals the trainer
  (SIGQUIT). SGLang's own handler would then SIGKILL the trainer; ours raises `RolloutFailed` instead, so
  the run stops with one line and resumes from its last checkpoint. A weight name the engine's model does not
  have is skipped with a warning, leaving that weight as it was (garbage after a memory release): the trainer
  stops the run when the engine's log-probs of its own samples are far from the learner's
  (--rollout.max-sampler-gap). `success=False` answers (possible only on SGLang's weight-cache paths) and a
  failed flush stop the run too.
- Memory: the engine starts with `enable_memory_saver=True`; `release_memory_occupation(tags=[kv_cache,
  weights, cuda_graph])` after generating frees its weights, KV cache and CUDA-graph memory for the learner.
  Before the new weights arrive, the learner's cached free blocks go back to the driver (`torch.cuda.empty_cache`)
  and only the weights are taken back; the KV cache and the graphs are taken back after the sync (the bucket
  copies emptied from the cache and their IPC handles collected first), so the sync's peak holds neither
  (verl's order), then the prefix cache is flushed.
- LoRA adapters (--lora.sync adapter): the engine starts with `enable_lora=True`, `max_lora_rank` and
  `lora_target_modules` (both required when no adapter is given at start-up; ServerArgs' LoRA check) and keeps the
  base weights; each sync unloads the previous adapter (`unload_lora_adapter`: a name cannot be loaded twice) and
  loads the new one with `load_lora_adapter_from_tensors(lora_name, tensors, config_dict)` (peft's names and
  adapter_config.json contents, what SGLang's own test passes), and `generate(..., lora_path=name)` samples with
  it. Both answer `LoRAUpdateOutput(success, error_message)` rather than raising: a failure stops the run. The
  weights are never released in this mode (without a CPU backup their memory comes back uninitialised, and no
  full weight sync would refill it): only the KV cache and CUDA graphs are. `max_loaded_loras` stays unset (an
  adapter loaded from tensors that SGLang evicted could not be reloaded: its path is "__tensor__").
- Reproducibility: every request gets a `sampling_seed` drawn from this rollout's own generator (checkpointed).
  SGLang honours it only with `--rollout.sglang-deterministic` (enable_deterministic_inference); otherwise a
  resumed run samples other responses than an uninterrupted one would.

What constructing SGLang's engine does to the trainer's process, and what this module does about it:

- Its scheduler process joins a one-process torch.distributed group through `tcp://127.0.0.1:<port>` and
  inherits the trainer's environment. Under torchrun that holds TORCHELASTIC_USE_AGENT_STORE=True, with which
  torch makes every tcp:// rendezvous a client of a store nobody serves: the scheduler would wait for the
  timeout and die. The variable is removed while the engine starts (as torch does for its own checkpoint
  subprocess) and put back after.
- Signals. Ctrl-C reaches every process of the terminal's process group and torchrun stops its workers with
  SIGTERM to their process group; SGLang's scheduler dies of either, and its death ends in the trainer being
  SIGKILLed. The engine's processes are therefore started with SIGINT and SIGTERM blocked (spawned children
  keep the signal mask): the trainer alone finishes its step, checkpoints and stops. SGLang's SIGQUIT
  handler (a child failed: SIGKILL the whole tree) is replaced by ours (`custom_sigquit_handler`), and the
  SIGTERM/SIGQUIT handlers its tokenizer manager adds to its event loop on the first request (SIGTERM would
  only be seen during a later engine call, and then exit the process) are taken out right after that request,
  which the constructor makes (a prefix-cache flush), and the trainer's own put back.
- It sets the multiprocessing start method to spawn for the whole process (the grader pool has its own
  forkserver context), sets NCCL_CUMEM_ENABLE/NCCL_NVLS_ENABLE (where unset) and CUDA_DEVICE_MAX_CONNECTIONS,
  moves the torch.compile and Triton caches under ~/.cache/sglang when imported, and `Engine.shutdown` (also
  run at exit) kills every child process of the trainer, the grader pool's too: the runner never calls it
  while the grader pool is in use, and a grader worker killed mid-step is restarted (tests/integration).
- The offline engine opens no HTTP port; the scheduler's rendezvous port is a free port SGLang picks.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from platforms.backend.rollout import pad_token_id, stop_token_ids
from remix import distributed as dist
from remix.interfaces import Generation, Rollout, RolloutFailed, SamplingParams

SGLANG_VERSION = "0.5.20"
# sglang.srt.constants GPU_MEMORY_TYPE_KV_CACHE, GPU_MEMORY_TYPE_WEIGHTS, GPU_MEMORY_TYPE_CUDA_GRAPH
MEMORY_TAGS = ["kv_cache", "weights", "cuda_graph"]
AFTER_SYNC_TAGS = ["kv_cache", "cuda_graph"]  # taken back once the weights have arrived
ENGINE_DTYPE = "bfloat16"  # SGLang's attention kernels take no float32 (module docstring)
# Set by torchrun; with it, torch turns the scheduler's tcp:// rendezvous into a client of a store nobody serves.
TORCHRUN_AGENT_STORE = "TORCHELASTIC_USE_AGENT_STORE"


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


def give_back_cuda_memory(collect_garbage: bool = True) -> None:
    """This process's cached free CUDA blocks back to the driver, and the CUDA IPC handles other processes have
    released collected, so that SGLang's scheduler process can take that memory (as verl does before resuming).
    `collect_garbage`: first a full collection, for tensors held only by reference cycles (once a step is enough)."""
    import gc

    if collect_garbage:
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


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


@contextmanager
def engine_process_environment() -> Iterator[None]:
    """What SGLang's processes inherit while its engine starts: no torchrun agent-store variable, and SIGINT and
    SIGTERM blocked (a spawned child keeps the signal mask, so they never reach it). The trainer gets its
    environment back after, and a signal that arrived meanwhile is delivered to its handler then, not lost.

    multiprocessing's resource tracker is started first: starting it UNBLOCKS SIGINT and SIGTERM in the calling
    thread (resource_tracker.ensure_running, CPython 3.11), so a first spawn inside the window would end it."""
    resource_tracker.ensure_running()
    saved_store = os.environ.pop(TORCHRUN_AGENT_STORE, None)
    saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        if saved_store is not None:
            os.environ[TORCHRUN_AGENT_STORE] = saved_store


def engine_died(signum, frame) -> None:
    """SIGQUIT from SGLang: one of its processes failed (its scheduler sends it, and so does the engine's watchdog
    when a child exits with an error). SGLang's own handler SIGKILLs the trainer; this raises in the trainer."""
    raise RolloutFailed("SGLang's engine stopped: one of its processes failed (its log above says why); the run stops "
                        "here, and the same command resumes from the last checkpoint")


class SGLangRollout(Rollout):
    def __init__(self, model_dir: str | Path, *, seed: int = 0, dtype: str = "bfloat16", gpu: int = 0,
                 mem_fraction: float = 0.5, bucket_mb: int = 512, deterministic: bool = False,
                 api: SGLangAPI | None = None, platform: str = "cuda",
                 lora_adapter: tuple[int, tuple[str, ...]] | None = None) -> None:
        """`lora_adapter`: (rank, target modules) of the LoRA adapter this engine receives instead of merged
        weights (--lora.sync adapter); None: merged weights."""
        if os.environ.get("SGLANG_RETURN_ORIGINAL_LOGPROB", "").lower() in ("1", "true", "yes", "y"):
            raise ValueError("SGLANG_RETURN_ORIGINAL_LOGPROB is set: SGLang would return log-probs before "
                             "temperature, which are not those of the distribution sampled from; unset it")
        self.platform = platform
        self.api = api or SGLangAPI.load()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.stop_ids = stop_token_ids(GenerationConfig.from_pretrained(model_dir), self.tokenizer)
        self.pad_id = pad_token_id(self.tokenizer, self.stop_ids)
        if dtype != ENGINE_DTYPE and dist.is_main():
            print(f"rollout engine: SGLang samples with {ENGINE_DTYPE} weights (its attention kernels take no "
                  f"{dtype}); the learner computes in {dtype}", flush=True)
        self.dtype = getattr(torch, ENGINE_DTYPE)  # of the weights sent to the engine
        self.bucket_bytes = bucket_mb * 2**20
        # A tied LM head is the embedding under a second name: SGLang's models skip it, so it is not sent
        # (at Qwen2.5-1.5B that is 467 MB of bf16 less per sync).
        tied = getattr(AutoConfig.from_pretrained(model_dir), "tie_word_embeddings", False)
        self.skipped_weights = {"lm_head.weight"} if tied else set()
        self.generator = torch.Generator().manual_seed(seed)  # per-request seeds; its state is checkpointed
        self.released: set[str] = set()  # memory tags released to the learner
        self._trainer_sigterm = signal.getsignal(signal.SIGTERM)  # the runner's: finish the step, checkpoint
        self.adapter: str | None = None  # the name of the LoRA adapter loaded (--lora.sync adapter)
        self.adapter_syncs = 0
        self.memory_tags = MEMORY_TAGS if lora_adapter is None else AFTER_SYNC_TAGS  # the weights stay (docstring)
        lora_args = {} if lora_adapter is None else {
            "enable_lora": True, "max_lora_rank": lora_adapter[0], "lora_target_modules": list(lora_adapter[1])}
        with engine_process_environment():
            self.engine = self.api.Engine(
                model_path=str(model_dir), dtype=ENGINE_DTYPE, tp_size=1, base_gpu_id=gpu,
                mem_fraction_static=mem_fraction, enable_memory_saver=True, random_seed=seed,
                skip_tokenizer_init=True,  # token ids in, token ids out: our tokenizer and chat template
                enable_deterministic_inference=deterministic, log_level="error",
                custom_sigquit_handler=engine_died,  # not SGLang's SIGKILL of the whole process tree
                **lora_args,
            )
        # The first request makes SGLang's tokenizer manager add its SIGTERM/SIGQUIT handlers: make it now, and
        # take the handlers back, so that no later engine call runs with them.
        self._check_flushed(self.engine.flush_cache(), "after starting")
        self._take_back_signal_handlers()

    def _take_back_signal_handlers(self) -> None:
        """Removes the handlers SGLang's event loop holds for SIGTERM and SIGQUIT; puts back the trainer's SIGTERM
        handler and `engine_died` for SIGQUIT."""
        loop = self.engine.tokenizer_manager.event_loop  # pinned by tests/contract: a rename must fail loudly
        for sig in (signal.SIGTERM, signal.SIGQUIT):
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGTERM, self._trainer_sigterm)
        signal.signal(signal.SIGQUIT, engine_died)

    @staticmethod
    def _check_flushed(flushed, when: str) -> None:
        if not flushed.success:
            raise RolloutFailed(f"SGLang could not flush its prefix cache {when}: {flushed.message}")

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        if self.released:
            raise RuntimeError(f"SGLangRollout.generate while {sorted(self.released)} are released: call resume_memory "
                               "and load_weights first")
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        flat = [p for p in prompts for _ in range(params.n)]
        if not flat:  # a process whose share of a step is all historical: SGLang refuses an empty request
            return [[] for _ in prompts]
        # greedy draws nothing, like the torch engine: evaluations leave the training samples' seeds alone
        seeds = torch.randint(0, 2**31 - 1, (len(flat),), generator=self.generator).tolist() \
            if params.temperature > 0 else [None] * len(flat)
        sampling = [{"temperature": params.temperature, "top_p": params.top_p, "top_k": -1,
                     "max_new_tokens": params.max_new_tokens, "stop_token_ids": sorted(self.stop_ids),
                     "sampling_seed": s} for s in seeds]
        adapter = {} if self.adapter is None else {"lora_path": self.adapter}  # one name: the whole batch
        outputs = self.engine.generate(input_ids=flat, sampling_params=sampling, return_logprob=True, **adapter)
        gens = [self._to_generation(o) for o in outputs]
        return [gens[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    @staticmethod
    def _to_generation(output: dict) -> Generation:
        meta = output["meta_info"]
        finish = meta["finish_reason"]
        if finish["type"] not in ("stop", "length") or finish.get("matched") == "NaN happened":
            raise RolloutFailed(f"SGLang finished a request with {finish!r}: no valid sample (its NaN path rewrites "
                                "the sampled token); the run stops rather than train on it")
        pairs = meta["output_token_logprobs"]
        tokens = [int(t) for _, t, _ in pairs]
        if tokens != list(output["output_ids"]):
            raise RolloutFailed(f"SGLang's output_ids {list(output['output_ids'])[:8]}... differ from the token ids of "
                                f"its log-probs {tokens[:8]}...")
        return Generation(tokens, [float(lp) for lp, _, _ in pairs], finish["type"])

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
                raise RolloutFailed(f"SGLang refused a weight update ({len(bucket)} tensors from {bucket[0][0]!r}): "
                                    f"{message}")
            del bucket, flat, payload, serialized  # this bucket's copies and handle: free before the next is built
        self._resume_kv_cache()
        # The prefix cache indexes keys and values of the old weights (and, after a release, pages whose content
        # is gone): flushed once, after the last bucket and with the KV cache back.
        self._check_flushed(self.engine.flush_cache(), "after the weight update")

    @torch.no_grad()
    def load_adapter(self, config: dict, tensors: dict[str, torch.Tensor]) -> None:
        """The policy's LoRA adapter replaces the previous one (a new name each time, the old one unloaded first:
        SGLang refuses a name it holds). The KV cache and graphs come back first, the prefix cache is flushed."""
        self._resume_kv_cache()
        if self.adapter is not None:
            self._check_lora(self.engine.unload_lora_adapter(lora_name=self.adapter), "unload", self.adapter)
            self.adapter = None
        name = f"policy-{self.adapter_syncs}"
        self.api.monkey_patch_torch_reductions()  # the tensors cross to the scheduler by CUDA IPC
        self._check_lora(self.engine.load_lora_adapter_from_tensors(lora_name=name, tensors=tensors,
                                                                    config_dict=config), "load", name)
        self.adapter, self.adapter_syncs = name, self.adapter_syncs + 1
        self._check_flushed(self.engine.flush_cache(), "after the adapter update")

    def _resume_kv_cache(self) -> None:
        """The KV cache and CUDA graphs back, where they were released (after a sync: its copies are gone)."""
        resume = [tag for tag in AFTER_SYNC_TAGS if tag in self.released]
        if resume:
            give_back_cuda_memory(collect_garbage=False)  # the buckets' copies (freed as each was sent) and their
            # IPC handles, for the engine's KV cache; resume_memory collected garbage this step already
            self.engine.resume_memory_occupation(tags=resume)
            self.released -= set(resume)

    @staticmethod
    def _check_lora(result, what: str, name: str) -> None:
        if not result.success:
            raise RolloutFailed(f"SGLang could not {what} the LoRA adapter {name!r}: {result.error_message}")

    def release_memory(self) -> None:
        if not self.released:
            self.engine.release_memory_occupation(tags=self.memory_tags)
            self.released = set(self.memory_tags)

    def resume_memory(self) -> None:
        """Takes the weights back (the KV cache and CUDA graphs follow in load_weights, after the sync)."""
        if "weights" in self.released:
            give_back_cuda_memory()  # the learner's cached free blocks, for the engine's process to take
            self.engine.resume_memory_occupation(tags=["weights"])
            self.released.discard("weights")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def shutdown(self) -> None:
        self.engine.shutdown()
