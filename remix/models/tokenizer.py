"""The small byte-level BPE tokenizer of `tiny-arith` (and of the random test models), trained in-process.

Digits are always single tokens (pre-split before BPE), so arithmetic is learnable digit by digit. Any text
encodes (byte-level alphabet); a few hundred merges learnt from the arith prompt form make the fixed
instruction suffix cheap (~20 tokens). The chat template is ChatML without a system message; the end-of-turn
token `<|im_end|>` is the eos so that generation stops there.
"""

from __future__ import annotations

import itertools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]  # ids 0, 1, 2
VOCAB_SIZE = 384  # 3 specials + 256 bytes + ~125 merges: enough to make every word of the prompt one token

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    """A fixed, small training corpus: chat-formatted arith prompts and responses of every level."""
    from remix.prompts import format_prompt

    lines = []
    for a, b in itertools.product(range(0, 100, 7), range(2, 100, 11)):
        for q, ans in ((f"{a} + {b}", a + b), (f"{a} - {b}", a - b), (f"{a} * {b % 10}", a * (b % 10)),
                       (f"({a} - {b % 10}) * {b % 7}", (a - b % 10) * (b % 7))):
            user = format_prompt(f"What is {q}?")
            reply = f"{q} = {ans}. \\boxed{{{ans}}}"
            lines.append(f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n{reply}{IM_END}\n")
    return lines


def train_arith_tokenizer():
    """The tiny-arith tokenizer as a transformers fast tokenizer (deterministic, well under a second)."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=sorted(pre_tokenizers.ByteLevel.alphabet()),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, unk_token=None, bos_token=None,
        chat_template=CHAT_TEMPLATE, model_max_length=1024, padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
