"""`tiny-arith`: a small Qwen2 model warm-started by a short supervised run on the arith task.

It is the default model of `make run`: small enough to sample and train on a 2-core CPU in seconds, and
deliberately *under*-trained (a short SFT) so that an RL run has room to raise held-out accuracy.
Also `build_tiny_random_model`, an untrained model of the same kind for other modules' unit tests.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import torch

from remix.models.tokenizer import train_arith_tokenizer

BUILD_VERSION = "v2"
"""Part of the cache folder name (tiny-arith-v1): bump it whenever the recipe below changes."""

# Model size (Qwen2 architecture, float32).
HIDDEN = 128
LAYERS = 2
HEADS = 4
INTERMEDIATE = 512
MAX_POSITIONS = 1024

# Warm start: teacher forcing on response tokens only, levels sampled with these weights.
SFT_LEVELS = (1, 2, 3)
SFT_LEVEL_WEIGHTS = (1.0, 1.0, 1.0)
SFT_STEPS = 200  # few on purpose: the warm start must leave held-out accuracy for RL to gain
# The cosine schedule is laid out for this many steps and stopped at SFT_STEPS, i.e. half-way, at a high
# learning rate. Measured (docs/benchmarks/tiny_arith_recipe.md): a model stopped there keeps improving
# under RL (greedy held-out 0.18 -> 0.40 in 150 GRPO steps), while one annealed to the end of a 200-step
# schedule (0.27 held-out) collapsed under the same RL settings.
SFT_SCHEDULE_STEPS = 400
SFT_BATCH = 64
SFT_LR = 3e-3
SFT_WARMUP = 30
SFT_SEED = 0
SFT_THREADS = 2  # never more: the machine is shared

_BINARY = re.compile(r"^What is (\d+) ([-+*]) (\d+)\?$")
_EXPR = re.compile(r"^What is (.+)\?$")


def _add_steps(a: int, b: int) -> str:
    if a < 10 and b < 10:
        return f"{a}+{b}={a + b}"
    (a1, a0), (b1, b0) = divmod(a, 10), divmod(b, 10)
    carry = (a0 + b0) // 10
    return f"{a}+{b}: {a0}+{b0}={a0 + b0}, {a1}+{b1}{'+1' if carry else ''}={a1 + b1 + carry}"


def _sub_steps(a: int, b: int) -> str:
    if a < b:
        return f"{a}-{b}=-({b}-{a}): " + _sub_steps(b, a).split(": ", 1)[-1]
    if a < 10:
        return f"{a}-{b}={a - b}"
    (a1, a0), (b1, b0) = divmod(a, 10), divmod(b, 10)
    if a0 >= b0:
        return f"{a}-{b}: {a0}-{b0}={a0 - b0}, {a1}-{b1}={a1 - b1}"
    return f"{a}-{b}: 1{a0}-{b0}={10 + a0 - b0}, {a1}-{b1}-1={a1 - b1 - 1}"


def _mul_steps(a: int, b: int) -> str:
    if a < 10:
        return f"{a}*{b}={a * b}"
    a1, a0 = divmod(a, 10)
    low = a0 * b
    carry = low // 10
    return f"{a}*{b}: {a0}*{b}={low}, {a1}*{b}{f'+{carry}' if carry else ''}={a1 * b + carry}"


def response_text(problem: str, answer: str) -> str:
    """The response format the warm start teaches: a short column-arithmetic chain, then the boxed answer.

    e.g. "45+28: 5+8=13, 4+2+1=7. \\boxed{73}", "23-45=-(45-23): 5-3=2, 4-2=2. \\boxed{-22}",
    "17*6: 7*6=42, 1*6+4=10. \\boxed{102}", "3+4=7. \\boxed{7}". Each step needs at most three digits,
    which a tiny model learns far faster than the whole answer at once. Other problems: "EXPR = ANSWER.".
    """
    text = problem.strip()
    m = _BINARY.match(text)
    if m:
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        steps = {"+": _add_steps, "-": _sub_steps, "*": _mul_steps}[op](a, b)
    else:
        m = _EXPR.match(text)
        steps = f"{m.group(1) if m else text} = {answer}"
    return f"{steps}. \\boxed{{{answer}}}"


def _qwen2_config(tokenizer, hidden: int, layers: int, heads: int, intermediate: int):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def _new_model(tokenizer, seed: int, hidden: int, layers: int, heads: int, intermediate: int):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_qwen2_config(tokenizer, hidden, layers, heads, intermediate)).float()
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id, None
    gc.do_sample, gc.temperature, gc.top_p, gc.top_k = False, None, None, None
    return model


def _save(model, tokenizer, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build_tiny_random_model(path: Path, seed: int = 0, vocab_from: str = "tiny-arith") -> Path:
    """Writes an untrained tiny Qwen2 model (hidden 32, 2 layers) to `path` in about a second.

    `vocab_from`: "tiny-arith" trains the tiny-arith tokenizer (same tokenizer and chat template);
    a local model folder copies that folder's tokenizer instead.
    """
    path = Path(path)
    if vocab_from == "tiny-arith":
        tokenizer = train_arith_tokenizer()
    elif (Path(vocab_from) / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(vocab_from)
    else:
        raise ValueError(
            f"vocab_from must be 'tiny-arith' or a local model folder with a tokenizer, got {vocab_from!r}")
    model = _new_model(tokenizer, seed, hidden=32, layers=2, heads=2, intermediate=64)
    path.mkdir(parents=True, exist_ok=True)
    _save(model, tokenizer, path)
    return path


# --------------------------------------------------------------------------------------------- warm start


def _sft_examples(tokenizer, levels: tuple[int, ...]):
    """Per level: list of (prompt ids, response ids incl. the end-of-turn token) for all training problems."""
    from remix.data import ArithTask
    from remix.prompts import encode_prompt

    eos = tokenizer.eos_token_id
    out = []
    for level in levels:
        rows = []
        for p in ArithTask((level,)).train_problems():
            resp = tokenizer(response_text(p.problem, p.answer), add_special_tokens=False)["input_ids"]
            rows.append((encode_prompt(tokenizer, p.problem), list(resp) + [eos]))
        out.append(rows)
    return out


def _batch(rows, pad_id: int):
    lens = [len(p) + len(r) for p, r in rows]
    t = max(lens)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), t), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        seq = p + r
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) : len(seq)] = torch.tensor(r)
        mask[i, : len(seq)] = 1
    return ids, mask, labels


def sft(model, tokenizer, steps: int = SFT_STEPS, batch: int = SFT_BATCH, lr: float = SFT_LR,
        seed: int = SFT_SEED, schedule_steps: int = SFT_SCHEDULE_STEPS, levels: tuple[int, ...] = SFT_LEVELS,
        level_weights: tuple[float, ...] = SFT_LEVEL_WEIGHTS, log_every: int = 0, callback=None) -> list[float]:
    """Teacher forcing on the response tokens of arith training problems. Returns the loss per step."""
    examples = _sft_examples(tokenizer, levels)
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor(level_weights, dtype=torch.float)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    def lr_factor(s: int) -> float:  # linear warm-up, then cosine over schedule_steps
        return min(1.0, (s + 1) / SFT_WARMUP) * 0.5 * (1 + math.cos(math.pi * min(s, schedule_steps) / schedule_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    model.train()
    losses = []
    for step in range(steps):
        lv = torch.multinomial(w, batch, replacement=True, generator=g).tolist()
        rows = [examples[k][torch.randint(len(examples[k]), (1,), generator=g).item()] for k in lv]
        ids, mask, labels = _batch(rows, tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"  sft step {step + 1}/{steps}  loss {sum(losses[-log_every:]) / log_every:.3f}", flush=True)
        if callback is not None:
            callback(step + 1, model)
    model.eval()
    return losses


def build_tiny_arith(out: Path) -> Path:
    """Trains the tokenizer, warm-starts the model with SFT and saves both to `out` (about two minutes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, SFT_THREADS))
    try:
        t0 = time.time()
        tokenizer = train_arith_tokenizer()
        model = _new_model(tokenizer, SFT_SEED, HIDDEN, LAYERS, HEADS, INTERMEDIATE)
        n = sum(p.numel() for p in model.parameters())
        print(f"tiny-arith: {n / 1e6:.2f}M parameters, vocab {len(tokenizer)}; SFT {SFT_STEPS} steps x {SFT_BATCH} "
              f"(of a {SFT_SCHEDULE_STEPS}-step schedule)",
              flush=True)
        losses = sft(model, tokenizer, log_every=max(1, SFT_STEPS // 4))
        print(f"tiny-arith: SFT done in {time.time() - t0:.0f}s (final loss {losses[-1]:.3f})", flush=True)
        _save(model, tokenizer, Path(out))
    finally:
        torch.set_num_threads(threads)
    return Path(out)
