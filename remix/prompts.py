"""The prompt form shared by training and evaluation (ALGORITHM.md sections 7 and 8): `PromptConfig`.

The user message is `--data.prompt-template` with the problem in place of `{problem}` (default: the problem
followed by the benchmark instruction), wrapped in the model's chat template with `--data.system-prompt` as the
system message, unless `--data.no-chat-template`. Training (scripts/run.py, whose config.json records the form) and
`eval.math_suite` (`--prompt-template`, ..., or `--prompt-from RUN_DIR`) read the same three fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from remix.validation import Checked, flag, require

PROMPT_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."
DEFAULT_TEMPLATE = "{problem} " + PROMPT_SUFFIX
PLACEHOLDER = "{problem}"


@dataclass
class PromptConfig(Checked):
    """How a problem becomes the model's prompt. A base of the configs that prompt a model."""

    prompt_template: str = DEFAULT_TEMPLATE
    """The user message; {problem} is replaced by the problem's text (no other braces are read)."""
    system_prompt: str | None = None
    """A system message before the user message (needs the chat template)."""
    chat_template: bool = True
    """Wrap the messages in the model's chat template (when it has one) and open the assistant's turn;
    without it the prompt is the plain user message."""

    def check(self) -> None:
        require(PLACEHOLDER in self.prompt_template, self.FLAG_PREFIX + "prompt_template",
                f"must contain {PLACEHOLDER}, got {self.prompt_template!r:.80}")
        require(self.system_prompt is None or self.chat_template, self.FLAG_PREFIX + "system_prompt",
                "needs the chat template (drop --no-chat-template)")

    def check_tokenizer(self, tokenizer) -> None:
        """ValueError naming --...system-prompt when there is a system message and no chat template to put it in
        (the config alone cannot know: it depends on the model's tokenizer)."""
        if self.system_prompt is not None and not (self.chat_template and getattr(tokenizer, "chat_template", None)):
            name = getattr(tokenizer, "name_or_path", "") or "this model"
            raise ValueError(f"{flag(self.FLAG_PREFIX + 'system_prompt')}: the model's tokenizer ({name}) has no chat "
                             "template to put a system message in")

    def prompt_form(self) -> PromptConfig:
        """These three fields alone (from a config that derives from this one)."""
        return PromptConfig(self.prompt_template, self.system_prompt, self.chat_template)


def format_prompt(problem: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The user message: the template with the (stripped) problem in place of {problem}."""
    return template.replace(PLACEHOLDER, problem.strip())


def encode_prompt(tokenizer, problem: str, form: PromptConfig | None = None) -> list[int]:
    """Token ids of the prompt for `problem` in `form` (default: the benchmark form), ready for generation."""
    form = form or PromptConfig()
    form.check_tokenizer(tokenizer)
    text = format_prompt(problem, form.prompt_template)
    if form.chat_template and getattr(tokenizer, "chat_template", None):
        system = [{"role": "system", "content": form.system_prompt}] if form.system_prompt is not None else []
        ids = tokenizer.apply_chat_template(system + [{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
        if hasattr(ids, "keys") and "input_ids" in ids:
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(text, add_special_tokens=True)["input_ids"]
