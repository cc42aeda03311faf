"""A fake of the part of SGLang 0.5.20 that platforms/cuda/sglang_rollout.py uses, with SGLang's names and
keyword arguments, strict where SGLang is: unknown server arguments or sampling parameters, generating while
the memory is released, or loading weights the engine does not have are errors.

It samples with the backend's TorchRollout on the CPU, one request at a time with the request's
`sampling_seed`, and returns SGLang's output format. tests/contract/test_sglang_contract.py checks every
method and keyword here against the pinned wheel's source, so code that runs against this fake calls
nothing that SGLang lacks.
"""

from __future__ import annotations

import base64
import pickle
from dataclasses import dataclass

import torch

from platforms.backend.rollout import TorchRollout
from remix.interfaces import SamplingParams

# sglang.srt.server_args.ServerArgs fields the rollout passes (checked against the wheel)
SERVER_ARGS = {"model_path", "dtype", "tp_size", "base_gpu_id", "port", "mem_fraction_static", "enable_memory_saver",
               "random_seed", "skip_tokenizer_init", "enable_deterministic_inference", "log_level"}
# sglang.srt.sampling.sampling_params.SamplingParams fields (checked against the wheel)
SAMPLING_KEYS = {"temperature", "top_p", "top_k", "max_new_tokens", "stop_token_ids", "sampling_seed"}
MEMORY_TAGS = {"kv_cache", "weights"}  # sglang.srt.constants


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
class FlushCacheReqOutput:  # sglang.srt.managers.io_struct.FlushCacheReqOutput
    success: bool
    message: str = ""


def monkey_patch_torch_reductions():  # sglang.srt.utils.patch_torch
    Calls.patched_reductions += 1


class Engine:  # sglang.srt.entrypoints.engine.Engine
    def __init__(self, **kwargs):
        unknown = set(kwargs) - SERVER_ARGS
        if unknown:
            raise TypeError(f"ServerArgs has no fields {sorted(unknown)}")
        self.server_args = kwargs
        self.sampler = TorchRollout(kwargs["model_path"], seed=kwargs.get("random_seed") or 0,
                                    dtype={"bfloat16": torch.bfloat16, "float32": torch.float32}[kwargs["dtype"]])
        self.released: set[str] = set()
        self.log: list[tuple] = []  # (method, details)
        self.cache_entries = 0  # prefix-cache entries: filled by generate, emptied by flush_cache
        self.is_shut_down = False
        self.fail_next_update: str | None = None  # a test sets a message: the next update reports failure

    def generate(self, prompt=None, sampling_params=None, input_ids=None, return_logprob=False):
        if self.released:
            raise RuntimeError(f"generate while {sorted(self.released)} are released")
        assert prompt is None and self.server_args.get("skip_tokenizer_init"), "token ids in, token ids out"
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
            meta = {"finish_reason": {"type": gen.finish_reason}, "output_token_logprobs":
                    [(lp, t, None) for lp, t in zip(gen.logprobs, gen.token_ids)] if return_logprob else None}
            outputs.append({"output_ids": gen.token_ids, "meta_info": meta})
        self.cache_entries += len(outputs)
        self.log.append(("generate", len(outputs)))
        return outputs

    def update_weights_from_tensor(self, named_tensors, load_format=None, flush_cache=True):
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
            if name not in own:
                raise KeyError(f"the engine's model has no weight {name!r}")
            own[name].copy_(tensor)
        self.log.append(("update_weights_from_tensor", payload["flattened_tensor"].numel(), len(payload["metadata"]),
                         flush_cache))
        if flush_cache:
            self.flush_cache()
        return True, "Success"

    def flush_cache(self):
        if self.released:  # strict: the rollout flushes with its memory back
            return FlushCacheReqOutput(success=False, message=f"{sorted(self.released)} are released")
        self.cache_entries = 0
        self.log.append(("flush_cache",))
        return FlushCacheReqOutput(success=True)

    def release_memory_occupation(self, tags=None):
        tags = set(tags or MEMORY_TAGS)
        assert tags <= MEMORY_TAGS and not (tags & self.released), f"releasing {tags}, already {self.released}"
        self.released |= tags
        self.log.append(("release_memory_occupation", tuple(sorted(tags))))

    def resume_memory_occupation(self, tags=None):
        tags = set(tags or MEMORY_TAGS)
        assert tags <= self.released, f"resuming {tags} that were not released"
        self.released -= tags
        self.log.append(("resume_memory_occupation", tuple(sorted(tags))))

    def shutdown(self):
        self.is_shut_down = True


def api():
    """The fake in the form platforms.cuda.sglang_rollout.SGLangAPI takes."""
    from platforms.cuda.sglang_rollout import SGLangAPI

    return SGLangAPI(Engine, FlattenedTensorBucket, MultiprocessingSerializer, monkey_patch_torch_reductions)
