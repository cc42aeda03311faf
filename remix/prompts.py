"""The prompt form shared by training and evaluation (ALGORITHM.md sections 7 and 8)."""

from __future__ import annotations

PROMPT_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."


def format_prompt(problem: str) -> str:
    """The user message: the problem followed by the benchmark instruction."""
    return f"{problem.strip()} {PROMPT_SUFFIX}"


def encode_prompt(tokenizer, problem: str) -> list[int]:
    """Token ids of the user message inside the model's chat template, ready for generation."""
    messages = [{"role": "user", "content": format_prompt(problem)}]
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
        if hasattr(ids, "keys") and "input_ids" in ids:
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(format_prompt(problem), add_special_tokens=True)["input_ids"]
