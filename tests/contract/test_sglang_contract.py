"""The SGLang rollout against the pinned sglang wheel's source, without installing it (10.5 GB with its CUDA
dependencies, and its kernels cannot run here).

The chain of evidence: platforms/cuda/sglang_rollout.py calls only methods and keywords that the fake engine
(tests/fakes/sglang.py) defines (checked here from the rollout's own syntax tree, and executed against the fake
in tests/unit/test_sglang_rollout.py); and every import path, class, method, keyword argument, server argument,
sampling parameter, memory tag and output key of the fake exists in sglang==SGLANG_VERSION's source (checked
here from the wheel, downloaded with `pip download --no-deps`, about 27 MB, and parsed with `ast`). Skipped, with
pip's reason, where the package registry cannot be reached.
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from platforms.cuda import sglang_rollout
from platforms.cuda.sglang_rollout import SGLANG_VERSION, SGLangAPI
from tests.fakes import sglang as fake

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel() -> dict[str, str]:
    """path inside the wheel -> source text, for every .py file of sglang==SGLANG_VERSION."""
    cache = Path(os.environ.get("REMIX_CACHE", Path.home() / ".cache" / "remix")) / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--quiet", f"sglang=={SGLANG_VERSION}", "-d", str(cache)],
                              capture_output=True, text=True, timeout=600)
        found = sorted(cache.glob(f"sglang-{SGLANG_VERSION}-*.whl"))
        if not found:
            reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"cannot download sglang=={SGLANG_VERSION} from the package registry: {reason}")
    with zipfile.ZipFile(found[0]) as z:
        return {n: z.read(n).decode() for n in z.namelist() if n.endswith(".py") or n.endswith("METADATA")}


def _tree(wheel, module: str) -> tuple[str, ast.Module]:
    base = module.replace(".", "/")
    for path in (f"{base}.py", f"{base}/__init__.py"):
        if path in wheel:
            return path, ast.parse(wheel[path])
    raise AssertionError(f"sglang=={SGLANG_VERSION} has no module {module}")


def _definition(wheel, module: str, name: str, seen=()) -> ast.AST:
    """The class/function/assignment that defines `name` in `module`, following `from X import *`."""
    _, tree = _tree(wheel, module)
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            return node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and (node.module, name) not in seen:
            if any(a.name == "*" for a in node.names):
                try:
                    return _definition(wheel, node.module, name, (*seen, (node.module, name)))
                except AssertionError:
                    continue
            if any((a.asname or a.name) == name for a in node.names):
                return _definition(wheel, node.module, name, (*seen, (node.module, name)))
    raise AssertionError(f"sglang=={SGLANG_VERSION}: {module} defines no {name}")


def _imports_of_sglang_api() -> list[tuple[str, str]]:
    """(module, name) of every import inside SGLangAPI.load: read from our code, not restated."""
    tree = ast.parse(inspect.getsource(SGLangAPI.load).strip().replace("\n    ", "\n"))
    return [(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]


def _params(fn: ast.FunctionDef) -> set[str]:
    a = fn.args
    return {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs} - {"self", "cls"}


def _methods(wheel, cls: ast.ClassDef, module: str) -> dict[str, ast.FunctionDef]:
    """Methods of a class and of its bases that are imported into or defined in its module."""
    out: dict[str, ast.FunctionDef] = {}
    _, tree = _tree(wheel, module)
    imported = {(a.asname or a.name): n.module for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    for base in cls.bases:
        if isinstance(base, ast.Name):
            where = imported.get(base.id, module)
            try:
                b = _definition(wheel, where, base.id)
            except AssertionError:
                continue
            if isinstance(b, ast.ClassDef):
                out.update(_methods(wheel, b, where))
    out.update({n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)})
    return out


def _fields(tree: ast.Module, classes: set[str] | None = None) -> set[str]:
    """Annotated class attributes (dataclass / msgspec fields) of the classes in a module."""
    return {n.target.id for c in tree.body if isinstance(c, ast.ClassDef) and (classes is None or c.name in classes)
            for n in c.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def test_the_cuda_extra_pins_the_checked_release_and_it_pins_our_torch(wheel):
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cuda"]
    assert extra == [f"sglang=={SGLANG_VERSION}"]
    metadata = next(v for k, v in wheel.items() if k.endswith("METADATA"))
    ours = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                if d.startswith("torch"))
    assert f"Requires-Dist: {ours}\n" in metadata


def test_every_import_of_the_rollout_exists(wheel):
    imports = _imports_of_sglang_api()
    assert len(imports) == 4
    for module, name in imports:
        _definition(wheel, module, name)


def test_every_method_and_keyword_of_the_fake_exists_with_that_name(wheel):
    api = dict(_imports_of_sglang_api()[i][::-1] for i in range(4))  # name -> module
    for name, fake_cls in (("Engine", fake.Engine), ("FlattenedTensorBucket", fake.FlattenedTensorBucket),
                           ("MultiprocessingSerializer", fake.MultiprocessingSerializer)):
        module = next(m for n, m in api.items() if n == name)
        real = _methods(wheel, _definition(wheel, module, name), module)
        for method, fn in vars(fake_cls).items():
            fn = getattr(fn, "__func__", fn)
            if not callable(fn) or (method.startswith("_") and method != "__init__"):
                continue
            assert method in real, f"sglang {name} has no method {method}"
            ours = set(inspect.signature(fn).parameters) - {"self", "kwargs"}
            missing = ours - _params(real[method])
            assert not missing, f"sglang {name}.{method} has no parameters {sorted(missing)}"
    patch = _definition(wheel, "sglang.srt.utils.patch_torch", "monkey_patch_torch_reductions")
    assert _params(patch) == set(inspect.signature(fake.monkey_patch_torch_reductions).parameters) == set()


def test_the_rollout_calls_only_what_the_fake_defines():
    """Every self.engine.X(...) and self.api.X(...) call in sglang_rollout.py, with its keywords, exists in the fake."""
    tree = ast.parse(inspect.getsource(sglang_rollout))
    owners = {"engine": fake.Engine, "api": None}
    calls = 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        chain = []
        while isinstance(target, ast.Attribute):
            chain.insert(0, target.attr)
            target = target.value
        if not (isinstance(target, ast.Name) and target.id == "self" and chain and chain[0] in owners):
            continue
        calls += 1
        if chain == ["engine"]:
            fn = getattr(fake.Engine, node.func.attr)
        elif chain == ["api"]:
            fn = getattr(fake, node.func.attr)
            fn = fn.__init__ if isinstance(fn, type) else fn
        else:  # self.api.Class.method(...)
            fn = getattr(getattr(fake, chain[1]), node.func.attr)
        keywords = {k.arg for k in node.keywords if k.arg}
        if fn is fake.Engine.__init__:
            assert keywords <= fake.SERVER_ARGS, keywords - fake.SERVER_ARGS
        else:
            assert keywords <= set(inspect.signature(fn).parameters), (node.func.attr, keywords)
    assert calls >= 8


def test_server_args_sampling_params_and_memory_tags_exist(wheel):
    fields = set()
    for path, text in wheel.items():
        if path.startswith("sglang/srt/arg_groups/fields/") and path.endswith(".py"):
            fields |= _fields(ast.parse(text))
    assert fake.SERVER_ARGS <= fields, fake.SERVER_ARGS - fields
    _, sampling = _tree(wheel, "sglang.srt.sampling.sampling_params")
    assert fake.SAMPLING_KEYS <= _fields(sampling, {"SamplingParams"}), fake.SAMPLING_KEYS - _fields(sampling)
    _, constants = _tree(wheel, "sglang.srt.constants")
    tags = {n.value.value for n in constants.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)}
    assert set(sglang_rollout.MEMORY_TAGS) == fake.MEMORY_TAGS and fake.MEMORY_TAGS <= tags


def test_output_format_and_weight_payload_keys_exist(wheel):
    tm = wheel["sglang/srt/managers/tokenizer_manager.py"]
    assert all(f'"{k}"' in tm for k in ("meta_info", "output_token_logprobs", "finish_reason"))
    finish = wheel["sglang/srt/managers/schedule_batch.py"]
    assert '"type": "stop"' in finish and '"type": "length"' in finish
    updater = wheel["sglang/srt/model_executor/model_runner_components/weight_updater.py"]
    assert 'load_format == "flattened_bucket"' in updater
    assert 'flattened_tensor_bucket_dict["flattened_tensor"]' in updater
    assert 'flattened_tensor_bucket_dict["metadata"]' in updater
    meta = _fields(_tree(wheel, "sglang.srt.weight_sync.tensor_bucket")[1], {"FlattenedTensorMetadata"})
    assert meta == set(fake.FlattenedTensorMetadata.__dataclass_fields__)
    assert "SGLANG_RETURN_ORIGINAL_LOGPROB = EnvBool(False)" in wheel["sglang/srt/environ.py"]


def test_the_results_the_rollout_checks_are_what_sglang_returns(wheel):
    """update_weights_from_tensor answers (success, message); flush_cache a FlushCacheReqOutput (success, message)."""
    module = "sglang.srt.managers.tokenizer_control_mixin"
    mixin = _definition(wheel, module, "TokenizerControlMixin")
    fns = {n.name: n for n in ast.walk(mixin) if isinstance(n, ast.AsyncFunctionDef)}
    update = ast.unparse(fns["update_weights_from_tensor"])
    assert "return (result.success, result.message)" in update or "return (success, message)" in update
    assert ast.unparse(fns["flush_cache"].returns) == "FlushCacheReqOutput"
    output = _fields(_tree(wheel, "sglang.srt.managers.io_struct")[1], {"FlushCacheReqOutput"})
    assert output == set(fake.FlushCacheReqOutput.__dataclass_fields__)


def test_what_the_fake_imitates_and_the_rollout_guards_against_is_in_sglangs_source(wheel):
    """The behaviours tests/fakes/sglang.py copies (its docstring lists them), each found in the wheel; and the
    torch behaviour the rollout's environment guard is about, in the installed torch."""
    engine = wheel["sglang/srt/entrypoints/engine.py"]
    assert 'mp.set_start_method("spawn", force=True)' in engine  # the whole trainer process
    assert "signal.signal(signal.SIGQUIT, launch_phase_sigquit_handler)" in engine
    assert "signal.signal(signal.SIGQUIT, cfg.custom_sigquit_handler)" in engine  # the handler the rollout passes
    assert "kill_process_tree(os.getpid(), include_parent=False" in engine  # shutdown: every child of the trainer
    assert "self.tokenizer_manager = tokenizer_manager" in engine
    tm = wheel["sglang/srt/managers/tokenizer_manager.py"]
    assert "self.event_loop = loop" in tm  # where the rollout finds the loop that holds SGLang's handlers
    assert "loop.add_signal_handler(signal.SIGTERM, signal_handler.sigterm_handler)" in tm
    assert "self.tokenizer_manager.gracefully_exit = True" in tm
    assert "parent_process.send_signal(signal.SIGQUIT)" in wheel["sglang/srt/managers/scheduler.py"]
    assert "os.kill(os.getpid(), signal.SIGQUIT)" in wheel["sglang/srt/utils/watchdog.py"]
    assert "init_method=distributed_init_method" in wheel["sglang/srt/distributed/parallel_state.py"]
    assert 'not found in params_dict")' in wheel["sglang/srt/models/qwen2.py"]  # unknown names: warned, skipped
    assert 'FINISH_MATCHED_STR(matched="NaN happened")' in wheel["sglang/srt/managers/schedule_batch.py"]
    assert 'out["output_ids"]' in tm or "\"output_ids\"" in tm
    import importlib

    source = inspect.getsource(importlib.import_module("torch.distributed.rendezvous"))  # not the function
    assert 'os.environ.get("TORCHELASTIC_USE_AGENT_STORE", None) == str(True)' in source
    assert sglang_rollout.TORCHRUN_AGENT_STORE == fake.TORCHRUN_AGENT_STORE == "TORCHELASTIC_USE_AGENT_STORE"


def test_the_lora_api_behaves_as_the_fake_does(wheel):
    """--lora.sync adapter: LoRAUpdateOutput's fields; a name already loaded is refused (so the rollout unloads
    first); with no adapter at start-up, max_lora_rank and lora_target_modules are required; an unknown name in
    generate raises; adapters from tensors are recorded under the path "__tensor__" (why max_loaded_loras stays
    unset: an evicted one could not be reloaded)."""
    output = _fields(_tree(wheel, "sglang.srt.managers.io_struct")[1], {"LoRAUpdateOutput"})
    assert output == set(fake.LoRAUpdateOutput.__dataclass_fields__)
    sources = "\n".join(text for path, text in wheel.items() if path.startswith("sglang/srt/"))
    assert "because it is already loaded" in wheel["sglang/srt/lora/lora_manager.py"]
    assert "you need to specify both --max-lora-rank and --lora-target-modules" in sources
    assert "Got LoRA adapter that has never been loaded" in wheel["sglang/srt/managers/tokenizer_manager.py"]
    assert '"__tensor__"' in sources
