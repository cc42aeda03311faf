"""A fake of the part of SGLang 0.5.20 that platforms/cuda/sglang_rollout.py uses, with SGLang's names and
keyword arguments, strict where SGLang is: unknown server arguments or sampling parameters, a float32 engine,
generating while the memory is released, or resuming memory that was not released are errors.

It behaves like SGLang where that decides whether a run survives (each point read in the 0.5.20 wheel):
- `Engine(...)` forces the multiprocessing start method to spawn and sets SGLang's NCCL/CUDA variables, then
  spawns a scheduler process that joins a one-process torch.distributed group through tcp://127.0.0.1:<free
  port> (gloo here, NCCL there) with the trainer's environment, so torchrun's TORCHELASTIC_USE_AGENT_STORE
  makes it fail as it does in SGLang (srt/distributed/parallel_state.py);
- the scheduler installs no signal handlers: SIGINT or SIGTERM kill it unless the trainer had them ignored when
  it was spawned; a scheduler that fails sends SIGQUIT to the trainer, and a watchdog thread does the same when
  a child exits with an error (srt/utils/watchdog.py);
- the trainer's SIGQUIT handler is `custom_sigquit_handler`, or SGLang's, which SIGKILLs the whole process tree
  (srt/entrypoints/engine.py); the first request of any kind adds SIGTERM and SIGQUIT handlers to the engine's
  event loop (srt/managers/tokenizer_manager.py): SIGTERM then only sets a flag, and the next engine call kills
  the children and exits the process with status 0;
- a weight that does not fit its parameter crashes the scheduler (SIGQUIT to the trainer); a weight name the
  model lacks is skipped with a warning (srt/models/qwen2.py);
- `shutdown()` (also run at exit) SIGKILLs every child process of the trainer, its grader pool's too;
- LoRA (srt/lora/, srt/managers/tokenizer_manager.py, srt/arg_groups/lora_hook.py): adapters need `enable_lora`,
  and with none at start-up `max_lora_rank` and `lora_target_modules`; `load_lora_adapter_from_tensors` and
  `unload_lora_adapter` answer `LoRAUpdateOutput(success=False, error_message=...)` instead of raising (a name
  already loaded, a rank above max_lora_rank, a module outside lora_target_modules, an unknown name);
  `generate(lora_path=name)` samples with base + (B @ A) * alpha / r (an unknown name raises ValueError).

It samples with the backend's TorchRollout on the CPU, in the trainer's process, one request at a time with the
request's `sampling_seed`, and returns SGLang's output format. tests/contract/test_sglang_contract.py checks every
method and keyword here against the pinned wheel's source, so code that runs against this fake calls nothing
that SGLang lacks.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import datetime
import multiprocessing as mp
import os
import pickle
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass

import psutil
import torch

from platforms.backend.rollout import TorchRollout
from remix.interfaces import SamplingParams

# sglang.srt.server_args.ServerArgs fields the rollout passes (checked against the wheel)
SERVER_ARGS = {"model_path", "dtype", "tp_size", "base_gpu_id", "mem_fraction_static", "enable_memory_saver",
               "random_seed", "skip_tokenizer_init", "enable_deterministic_inference", "log_level",
               "custom_sigquit_handler", "enable_lora", "max_lora_rank", "lora_target_modules"}
# sglang.srt.sampling.sampling_params.SamplingParams fields (checked against the wheel)
SAMPLING_KEYS = {"temperature", "top_p", "top_k", "max_new_tokens", "stop_token_ids", "sampling_seed"}
MEMORY_TAGS = {"kv_cache", "weights", "cuda_graph"}  # sglang.srt.constants
TORCHRUN_AGENT_STORE = "TORCHELASTIC_USE_AGENT_STORE"
RENDEZVOUS_TIMEOUT_S = 10  # the scheduler's rendezvous (torch's default there: 10 minutes for a dead end)


def _scheduler(port: int, parent: int, ready) -> None:
    """The scheduler process: joins its one-process group as SGLang's does, says it is ready, then serves until it
    is killed. No signal handlers of its own (SGLang's scheduler installs none)."""
    import torch.distributed as tdist

    try:
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0,
                                 timeout=datetime.timedelta(seconds=RENDEZVOUS_TIMEOUT_S))
    except Exception as e:  # noqa: BLE001 -- SGLang's scheduler: log, SIGQUIT the parent, exit
        print(f"fake sglang scheduler: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr, flush=True)
        os.kill(parent, signal.SIGQUIT)
        sys.exit(0)
    ready.send("ready")
    while True:
        time.sleep(3600)


def _free_port() -> int:  # sglang.srt.utils.network.get_free_port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gone(process: psutil.Process) -> bool:
    """Dead or a zombie (not reaped here: the multiprocessing handle that started it still reads its exit code)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_process_tree(pid: int, include_parent: bool = True, wait_timeout: float = 60) -> None:
    """sglang.srt.utils.common.kill_process_tree: SIGKILL every descendant, wait until they are gone, then the
    process itself."""
    children = psutil.Process(pid).children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + wait_timeout
    while not all(map(_gone, children)) and time.monotonic() < deadline:
        time.sleep(0.01)
    if include_parent:
        os.kill(pid, signal.SIGKILL)


@dataclass
class FlattenedTensorMetadata:  # sglang.srt.weight_sync.tensor_bucket.FlattenedTensorMetadata
    name: str
    shape: torch.Size
    dtype: torch.dtype
    start_idx: int
    end_idx: int
    numel: int


class FlattenedTensorBucket:  # sglang.srt.weight_sync.tensor_bucket.FlattenedTensorBucket
    def __init__(self, named_tensors=None, flattened_tensor=None, metadata=None):
        if named_tensors is not None:
            if not named_tensors:
                raise ValueError("Cannot create empty tensor bucket")
            parts, self.metadata, start = [], [], 0
            for name, tensor in named_tensors:
                flat = tensor.flatten().view(torch.uint8)
                self.metadata.append(FlattenedTensorMetadata(name, tensor.shape, tensor.dtype, start,
                                                             start + flat.numel(), flat.numel()))
                parts.append(flat)
                start += flat.numel()
            self.flattened_tensor = torch.cat(parts)
        else:
            self.flattened_tensor, self.metadata = flattened_tensor, metadata

    def get_flattened_tensor(self):
        return self.flattened_tensor

    def get_metadata(self):
        return self.metadata

    def reconstruct_tensors(self):
        return [(m.name, self.flattened_tensor[m.start_idx:m.end_idx].view(m.dtype).reshape(m.shape))
                for m in self.metadata]


class MultiprocessingSerializer:  # sglang.srt.utils.common.MultiprocessingSerializer (here: plain pickle)
    @staticmethod
    def serialize(obj, output_str: bool = False):
        data = pickle.dumps(obj)
        return base64.b64encode(data).decode() if output_str else data

    @staticmethod
    def deserialize(data):
        return pickle.loads(base64.b64decode(data) if isinstance(data, str) else data)


class Calls:
    """What the fake was asked, in order (tests read it)."""

    patched_reductions = 0


@dataclass
class LoRAUpdateOutput:  # sglang.srt.managers.io_struct.LoRAUpdateOutput
    success: bool
    error_message: str | None = None
    loaded_adapters: dict | None = None


@dataclass
class FlushCacheReqOutput:  # sglang.srt.managers.io_struct.FlushCacheReqOutput
    success: bool
    message: str = ""


def monkey_patch_torch_reductions():  # sglang.srt.utils.patch_torch
    Calls.patched_reductions += 1


class TokenizerManager:  # sglang.srt.managers.tokenizer_manager.TokenizerManager (its signal handling)
    def __init__(self):
        self.event_loop = None
        self.gracefully_exit = False

    def auto_create_handle_loop(self):
        if self.event_loop is not None:
            return
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.event_loop = loop
        if threading.current_thread() is threading.main_thread():
            loop.add_signal_handler(signal.SIGTERM, self.sigterm_handler)
            loop.add_signal_handler(signal.SIGQUIT, lambda: kill_process_tree(os.getpid()))

    def sigterm_handler(self):
        self.gracefully_exit = True

    def run(self, fn, *args, **kwargs):
        """An engine call: inside the event loop (where its signal handlers run), then the SIGTERM watchdog."""
        self.auto_create_handle_loop()

        async def call():
            await asyncio.sleep(0)  # a pending signal's handler runs here
            return fn(*args, **kwargs)

        result = self.event_loop.run_until_complete(call())
        self.event_loop.run_until_complete(asyncio.sleep(0))
        if self.gracefully_exit:  # sigterm_watchdog: drain, kill the children, exit the process
            kill_process_tree(os.getpid(), include_parent=False)
            sys.exit(0)
        return result


class Engine:  # sglang.srt.entrypoints.engine.Engine
    def __init__(self, **kwargs):
        unknown = set(kwargs) - SERVER_ARGS
        if unknown:
            raise TypeError(f"ServerArgs has no fields {sorted(unknown)}")
        if kwargs["dtype"] not in ("bfloat16", "float16"):
            raise RuntimeError("FlashAttention only supports fp16, bf16, and fp8_e4m3 data type "
                               "(SGLang's default attention backend, while capturing CUDA graphs at start-up)")
        self.server_args = kwargs
        # _set_envs_and_config
        os.environ.setdefault("NCCL_CUMEM_ENABLE", "0")
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
        os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] = "8"
        handler = kwargs.get("custom_sigquit_handler") or (lambda signum, frame: kill_process_tree(os.getpid()))
        signal.signal(signal.SIGQUIT, handler)
        mp.set_start_method("spawn", force=True)
        ctx = mp.get_context("spawn")
        ready, child_end = ctx.Pipe()
        self.scheduler = ctx.Process(target=_scheduler, args=(_free_port(), os.getpid(), child_end), daemon=True)
        self.scheduler.start()
        deadline = time.monotonic() + RENDEZVOUS_TIMEOUT_S + 60
        while not ready.poll(0.1):
            if not self.scheduler.is_alive() or time.monotonic() > deadline:
                time.sleep(0.5)  # its SIGQUIT, where it sent one, arrives first
                raise RuntimeError("Initialization failed. Please see the error messages above.")
        ready.recv()
        self._watching = True
        threading.Thread(target=self._watchdog, daemon=True).start()
        atexit.register(self.shutdown)
        self.tokenizer_manager = TokenizerManager()
        self.sampler = TorchRollout(kwargs["model_path"], seed=kwargs.get("random_seed") or 0,
                                    dtype={"bfloat16": torch.bfloat16, "float16": torch.float16}[kwargs["dtype"]])
        self.released: set[str] = set()
        self.log: list[tuple] = []  # (method, details)
        self.cache_entries = 0  # prefix-cache entries: filled by generate, emptied by flush_cache
        self.is_shut_down = False
        self.fail_next_update: str | None = None  # a test sets a message: the next update reports failure
        self.nan_next = False  # a test sets it: the next request ends on SGLang's NaN path
        self.adapters: dict[str, dict[str, torch.Tensor]] = {}  # lora_name -> merged weights of the adapted layers
        self.base_weights = None  # the base model's weights while an adapter is applied
        if kwargs.get("enable_lora") and not (kwargs.get("max_lora_rank") and kwargs.get("lora_target_modules")):
            raise AssertionError("When no initial --lora-paths is provided, you need to specify both --max-lora-rank "
                                 "and --lora-target-modules for LoRA initialization.")

    def _watchdog(self):  # sglang.srt.utils.watchdog.SubprocessWatchdog
        while self._watching:
            code = self.scheduler.exitcode
            if code not in (None, 0) and self._watching:
                os.kill(os.getpid(), signal.SIGQUIT)
                return
            time.sleep(0.2)

    def generate(self, prompt=None, sampling_params=None, input_ids=None, return_logprob=False, lora_path=None):
        return self.tokenizer_manager.run(self._generate, prompt, sampling_params, input_ids, return_logprob,
                                          lora_path)

    def _generate(self, prompt, sampling_params, input_ids, return_logprob, lora_path=None):
        if self.released:
            raise RuntimeError(f"generate while {sorted(self.released)} are released")
        self._apply_adapter(lora_path)
        assert prompt is None and self.server_args.get("skip_tokenizer_init"), "token ids in, token ids out"
        if not input_ids:  # io_struct's _determine_batch_size
            raise ValueError("input_ids cannot be empty.")
        outputs = []
        for ids, sp in zip(input_ids, sampling_params):
            unknown = set(sp) - SAMPLING_KEYS
            if unknown:
                raise TypeError(f"SamplingParams has no fields {sorted(unknown)}")
            if sp["top_k"] != -1:
                raise AssertionError("the rollout must sample from the whole vocabulary")
            self.sampler.stop_ids = set(sp["stop_token_ids"])
            params = SamplingParams(temperature=sp["temperature"], top_p=sp["top_p"],
                                    max_new_tokens=sp["max_new_tokens"], n=1, seed=sp["sampling_seed"])
            (gen,), = self.sampler.generate([ids], params)
            finish = {"type": gen.finish_reason}
            output_ids = list(gen.token_ids)
            if self.nan_next:  # schedule_batch.py: the id is replaced by a stop token, the log-prob entry keeps it
                self.nan_next = False
                finish = {"type": "stop", "matched": "NaN happened"}
                output_ids[-1] = min(sp["stop_token_ids"])
            meta = {"finish_reason": finish, "output_token_logprobs":
                    [(lp, t, None) for lp, t in zip(gen.logprobs, gen.token_ids)] if return_logprob else None}
            outputs.append({"output_ids": output_ids, "meta_info": meta})
        self.cache_entries += len(outputs)
        self.log.append(("generate", len(outputs)))
        return outputs

    def _apply_adapter(self, lora_path) -> None:
        """The sampler's weights: the base model's, or with an adapter's merged into its layers."""
        if isinstance(lora_path, list):
            assert len(set(lora_path)) == 1, "the fake applies one adapter to a whole batch"
            lora_path = lora_path[0]
        if lora_path is not None and lora_path not in self.adapters:
            raise ValueError(f"Got LoRA adapter that has never been loaded: {lora_path}")
        own = self.sampler.model.state_dict()
        with torch.no_grad():
            if self.base_weights is not None:  # back to the base first
                for name, t in self.base_weights.items():
                    own[name].copy_(t)
                self.base_weights = None
            if lora_path is not None:
                self.base_weights = {name: own[name].clone() for name in self.adapters[lora_path]}
                for name, delta in self.adapters[lora_path].items():
                    own[name].copy_((own[name].float() + delta).to(own[name].dtype))

    def load_lora_adapter_from_tensors(self, lora_name, tensors, config_dict, load_format=None):
        return self.tokenizer_manager.run(self._load_lora, lora_name, tensors, config_dict, load_format)

    def _load_lora(self, lora_name, tensors, config_dict, load_format):
        args = self.server_args
        if not args.get("enable_lora"):
            return LoRAUpdateOutput(False, "LoRA is not enabled. Please set `--enable-lora` to `True`.")
        if lora_name in self.adapters:
            return LoRAUpdateOutput(False, f"Failed to load LoRA adapter {lora_name} because it is already loaded")
        r, alpha, modules = config_dict["r"], config_dict["lora_alpha"], set(config_dict["target_modules"])
        if r > args["max_lora_rank"] or not modules <= set(args["lora_target_modules"]):
            return LoRAUpdateOutput(False, f"LoRA adapter {lora_name} with rank {r} and modules {sorted(modules)} is "
                                           "incompatible with the current LoRA memory pool configuration")
        deltas = {}
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            layer = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            deltas[f"{layer}.weight"] = (b.float().cpu() @ a.float().cpu()) * (alpha / r)
        self.adapters[lora_name] = deltas
        self.log.append(("load_lora_adapter_from_tensors", lora_name, len(tensors)))
        return LoRAUpdateOutput(True, None, {name: "__tensor__" for name in self.adapters})

    def unload_lora_adapter(self, lora_name):
        return self.tokenizer_manager.run(self._unload_lora, lora_name)

    def _unload_lora(self, lora_name):
        if lora_name not in self.adapters:
            return LoRAUpdateOutput(False, f"LoRA adapter {lora_name} is not loaded")
        del self.adapters[lora_name]
        self.log.append(("unload_lora_adapter", lora_name))
        return LoRAUpdateOutput(True, None, {name: "__tensor__" for name in self.adapters})

    def update_weights_from_tensor(self, named_tensors, load_format=None, flush_cache=True):
        return self.tokenizer_manager.run(self._update_weights_from_tensor, named_tensors, load_format, flush_cache)

    def _update_weights_from_tensor(self, named_tensors, load_format, flush_cache):
        if "weights" in self.released:
            raise RuntimeError("update_weights_from_tensor while the weights are released")
        assert load_format == "flattened_bucket" and len(named_tensors) == self.server_args["tp_size"]
        if self.fail_next_update:
            message, self.fail_next_update = self.fail_next_update, None
            return False, message
        payload = MultiprocessingSerializer.deserialize(named_tensors[0])
        bucket = FlattenedTensorBucket(flattened_tensor=payload["flattened_tensor"], metadata=payload["metadata"])
        own = self.sampler.model.state_dict()
        for name, tensor in bucket.reconstruct_tensors():
            if name not in own:  # qwen2.py load_weights: logged and skipped
                warnings.warn(f"Parameter {name} not found in params_dict", stacklevel=1)
                continue
            if own[name].shape != tensor.shape:  # default_weight_loader's assert, in the scheduler: it SIGQUITs the
                self._watching = False             # trainer and exits with status 0 (the watchdog sees no error)
                self.scheduler.kill()
                os.kill(os.getpid(), signal.SIGQUIT)
                time.sleep(1)  # the handler runs (or the process is killed) before this returns
            own[name].copy_(tensor)
        self.log.append(("update_weights_from_tensor", payload["flattened_tensor"].numel(), len(payload["metadata"]),
                         flush_cache))
        if flush_cache:
            self._flush_cache()
        return True, "Success"

    def flush_cache(self):
        return self.tokenizer_manager.run(self._flush_cache)

    def _flush_cache(self):
        if self.released:  # strict: the rollout flushes with its memory back
            return FlushCacheReqOutput(success=False, message=f"{sorted(self.released)} are released")
        self.cache_entries = 0
        self.log.append(("flush_cache",))
        return FlushCacheReqOutput(success=True)

    def release_memory_occupation(self, tags=None):
        return self.tokenizer_manager.run(self._release, tags)

    def _release(self, tags):
        tags = set(tags or MEMORY_TAGS)
        assert tags <= MEMORY_TAGS and not (tags & self.released), f"releasing {tags}, already {self.released}"
        self.released |= tags
        self.log.append(("release_memory_occupation", tuple(sorted(tags))))

    def resume_memory_occupation(self, tags=None):
        return self.tokenizer_manager.run(self._resume, tags)

    def _resume(self, tags):
        tags = set(tags or MEMORY_TAGS)
        assert tags <= self.released, f"resuming {tags} that were not released"  # a KeyError in the scheduler
        if "weights" in tags:  # without a CPU backup the weights' memory comes back uninitialised
            with torch.no_grad():
                for p in self.sampler.model.parameters():
                    p.normal_(0.0, 1.0)
        self.released -= tags
        self.log.append(("resume_memory_occupation", tuple(sorted(tags))))

    def shutdown(self):
        self._watching = False
        if not self.is_shut_down:
            kill_process_tree(os.getpid(), include_parent=False)
        self.is_shut_down = True


def api():
    """The fake in the form platforms.cuda.sglang_rollout.SGLangAPI takes."""
    from platforms.cuda.sglang_rollout import SGLangAPI

    return SGLangAPI(Engine, FlattenedTensorBucket, MultiprocessingSerializer, monkey_patch_torch_reductions)
