"""Math answer grading (the binary reward) that never hangs.

`verify_in_process(response, reference, rule)` is the pure grading function: it takes the text after
the last "</think>", extracts the last \\boxed{...} (or \\fbox{...}) and compares it with math-verify
against the reference (a string, a number or a list of acceptable answers). What happens without a
box is the grading rule:

- "boxed" (the default, the paper's: DeepScaleR's grader): a response without a complete box after
  the last "</think>" scores 0, so truncated and unboxed responses never count as correct;
- "lenient": math-verify's own extraction on that text instead (e.g. the last number), which scores
  "3 + 4 = 7, then 7 * 2 = 14" as correct against 14. Not comparable with the paper's tables.

math-verify and sympy can take unbounded time (or blow the C stack) on hostile model output, and
math-verify's own SIGALRM timeouts work only on a main thread. So grading runs in `GraderPool`: a
few long-lived worker processes ('forkserver' context, never plain fork: the parent holds torch
threads), each grading its items one after another, with a wall-clock deadline per item enforced by
the parent. A worker past its deadline is SIGKILLed and replaced and the item scores 0 (counted in
`timeouts`); a worker that dies, or an item whose grading raised, scores 0 and is counted in
`errors`. Both are logged. A worker holds a few items at a time (`PIPELINE_ITEMS`, at most
`PIPELINE_BYTES` of text): handing over one item per round trip left it idle for longer than a
grade takes (1.5 ms of IPC against 0.9 ms of math-verify per short answer); the items queued behind
one that is killed go back to the pool and are graded again by another worker.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import multiprocessing as mp
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Literal, Self

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0
_MAX_START_FAILURES = 3
# Items handed to one worker before its first answer comes back. The bytes bound keeps what is in flight
# below a pipe's buffer (16 KiB on macOS, 64 KiB on Linux): the parent must never block in a send, where it
# could not enforce a deadline. One item is always allowed, whatever its size (as before pipelining).
PIPELINE_ITEMS = 8
PIPELINE_BYTES = 16 * 1024
# A bare number in e-notation ("4.5e33", as in several Minerva answers): math-verify reads the "e"
# as Euler's number, so it is rewritten as "4.5 \times 10^{33}" on both sides before parsing.
_E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([-+]?\d+)(?![\w.])")
GradingRule = Literal["boxed", "lenient"]
GRADING_RULES: tuple[GradingRule, ...] = ("boxed", "lenient")
_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\.|[{}]", re.DOTALL)


def extract_answer(response: str) -> str | None:
    """The content of the last complete \\boxed{...}/\\fbox{...} after the last "</think>".

    Braces are matched (escaped \\{ and \\} do not count); of nested boxes the outer one wins, and an
    unclosed box is ignored. None when there is no complete box.
    """
    _, sep, tail = response.rpartition("</think>")
    text = tail if sep else response
    stack: list[int] = []  # for each open brace: content start of a box, or -1 for a plain brace
    last = None
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(-1)
        elif tok == "}":
            if stack and (start := stack.pop()) >= 0:
                last = text[start : m.start()]  # boxes close in order, so the latest close is last
        elif len(tok) > 2:  # "\boxed{" or "\fbox{" (escapes such as "\{" are two characters)
            stack.append(m.end())
    return last


def _sci(text: str) -> str:
    return _E_NOTATION.sub(r"\1 \\times 10^{\2}", text)


def _reference_texts(reference) -> list[str]:
    if isinstance(reference, (list, tuple)):
        return [t for r in reference for t in _reference_texts(r)]
    if isinstance(reference, bool):
        raise TypeError("a reference answer cannot be a bool")
    if isinstance(reference, float):
        if not math.isfinite(reference):
            raise ValueError(f"non-finite reference {reference!r}")
        return [str(int(reference)) if reference.is_integer() else repr(reference)]
    if isinstance(reference, (int, str)):
        return [str(reference).strip()]
    raise TypeError(f"unsupported reference type {type(reference).__name__}")


@functools.lru_cache(maxsize=4096)
def _parse_gold(text: str):
    from math_verify import parse

    text = _sci(text)
    delimited = "\\boxed" in text or re.search(r"(?<!\\)\$", text)  # "\$" is a dollar sign, not math
    wrapped = text if delimited else f"${text}$"
    return parse(wrapped, parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_boxed(content: str):
    """A prediction's box, parsed. Cached: answers repeat (a group's samples, one policy's greedy answers at
    consecutive evaluations), and parsing is nearly all of a grade's time (about 2 ms of latex2sympy)."""
    from math_verify import parse

    return parse("\\boxed{" + _sci(content) + "}", parsing_timeout=None)


def verify_in_process(response: str, reference, rule: GradingRule = "boxed") -> float:
    """1.0 if the response's final answer matches the reference (any of a list), else 0.0.
    `rule` says what a response without a box gets (see the module docstring).

    No timeout of its own (math-verify's are disabled, they need SIGALRM on the main thread): run
    it through `GraderPool`/`grade` unless the input is trusted.
    """
    from math_verify import parse, verify

    golds = [g for g in map(_parse_gold, _reference_texts(reference)) if g]
    if not golds:
        return 0.0
    if rule not in GRADING_RULES:
        raise ValueError(f"unknown grading rule {rule!r}; choose one of {GRADING_RULES}")
    boxed = extract_answer(response)
    if boxed is not None:
        pred = _parse_boxed(boxed)
    elif rule == "boxed":
        return 0.0
    else:
        _, sep, tail = response.rpartition("</think>")
        pred = parse(_sci(tail if sep else response), parsing_timeout=None)
    if not pred:
        return 0.0
    return 1.0 if any(verify(g, pred, timeout_seconds=None) for g in golds) else 0.0


def _worker_main(conn, verify_fn) -> None:
    """Worker loop: receive (index, response, reference), send back (index, score, error)."""
    import signal

    import math_verify.grader
    import math_verify.parser

    # Ctrl-C in a terminal (or a SIGTERM to the job's process group) reaches every process: the parent
    # decides when workers stop (it closes or SIGKILLs them; an orphan sees EOF on its pipe), so a worker
    # neither dies mid-item, which would score that item 0, nor prints a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    # We disable math-verify's timeouts on purpose (the pool deadline is the guard): silence the
    # warning it would otherwise log once per worker.
    math_verify.parser.TIMEOUT_WARNING_SHOWN = math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        index, response, reference = msg
        try:
            score, error = float(verify_fn(response, reference)), None
        except Exception as e:  # noqa: BLE001 -- not swallowed: the parent counts it in `errors` and logs it
            score, error = 0.0, type(e).__name__
        conn.send((index, score, error))


@dataclass
class GradeReport:
    scores: list[float]
    timeouts: int = 0
    errors: int = 0  # worker crashes and exceptions raised while grading an item
    timed_out: list[int] = field(default_factory=list)  # indices of the items that timed out
    # for each of `timed_out`: how long the item had been with its worker when the pool killed it (seconds);
    # never less than the deadline (later only by how late the pool woke up on a busy machine)
    killed_after_s: list[float] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # indices of the items counted in `errors`


class _Worker:
    def __init__(self, ctx, verify_fn):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, verify_fn), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.created = time.monotonic()
        self.inflight: deque[int] = deque()  # indices of the items sent to it and not answered, in order
        self.inflight_bytes = 0
        # When the head of `inflight` started: when it was sent to an idle worker, else when the answer
        # before it arrived (never earlier than the true start, so a kill is never before the deadline).
        self.started = 0.0

    def can_take(self, size: int) -> bool:
        if not self.inflight:
            return True
        return len(self.inflight) < PIPELINE_ITEMS and self.inflight_bytes + size <= PIPELINE_BYTES

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class GraderPool:
    """Long-lived grading workers with a hard wall-clock deadline per item. Use as a context manager.

    Not thread-safe: one `grade` call at a time, from the process that created the pool.
    """

    def __init__(self, num_workers: int = 2, timeout_s: float = 5.0, verify_fn=None, rule: GradingRule = "boxed"):
        """`rule`: the grading rule of `verify_in_process`; `verify_fn` replaces that function (tests)."""
        if num_workers < 1 or timeout_s <= 0:
            raise ValueError("num_workers must be >= 1 and timeout_s > 0")
        if rule not in GRADING_RULES:
            raise ValueError(f"unknown grading rule {rule!r}; choose one of {GRADING_RULES}")
        if verify_fn is None:
            verify_fn = functools.partial(verify_in_process, rule=rule)
        self.rule = rule
        self.timeout_s = timeout_s
        self._verify_fn = verify_fn  # a picklable module-level function (tests swap it)
        self.pid = os.getpid()
        self._ctx = mp.get_context("forkserver")
        # Import math-verify/sympy once in the fork server, so a replacement worker starts in ms; the fork
        # server also ignores SIGTERM (remix/grader_forkserver.py says why).
        self._ctx.set_forkserver_preload(["__main__", __name__, "remix.grader_forkserver"])
        self._workers = [_Worker(self._ctx, verify_fn) for _ in range(num_workers)]
        self._start_failures = 0  # workers in a row that exited on their own before saying ready

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def wait_ready(self) -> None:
        """Blocks until every worker has said it is ready (one killed while starting is replaced; one that
        does not start within the start-up bound raises). `grade` does not need it: it hands items to the
        workers that are ready; a caller that wants every worker in use from the first item calls it first."""
        report, pending = GradeReport(scores=[]), deque()
        while not all(w.ready for w in self._workers):
            starting = [w for w in self._workers if not w.ready]
            wait([x for w in starting for x in (w.conn, w.proc.sentinel)], timeout=1.0)
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if not w.ready:
                    self._collect(i, w, now, self.timeout_s, report, [], pending, [])

    def _replace(self, i: int) -> None:
        self._workers[i].kill()
        self._workers[i] = _Worker(self._ctx, self._verify_fn)

    def grade(self, responses: list[str], references: list, timeout_s: float | None = None) -> GradeReport:
        if len(responses) != len(references):
            raise ValueError(f"{len(responses)} responses but {len(references)} references")
        if not self._workers:
            raise RuntimeError("GraderPool is closed")
        deadline = self.timeout_s if timeout_s is None else timeout_s
        self._replace_dead_idle_workers()
        report = GradeReport(scores=[0.0] * len(responses))
        pending, remaining = deque(range(len(responses))), len(responses)
        sizes = [len(r.encode("utf-8", "surrogatepass")) + 256 for r in responses]  # 256: index, reference, pickle
        try:
            while remaining:
                self._hand_out(pending, responses, references, sizes)
                busy = [w.started + deadline for w in self._workers if w.inflight]
                wait_s = max(0.0, min(busy) - time.monotonic()) if busy else 60.0
                wait([x for w in self._workers for x in (w.conn, w.proc.sentinel)], timeout=wait_s)
                now = time.monotonic()
                for i, w in enumerate(self._workers):
                    remaining -= self._collect(i, w, now, deadline, report, responses, pending, sizes)
        except BaseException:  # e.g. KeyboardInterrupt: never leave stale work in a worker
            for i, w in enumerate(self._workers):
                if w.inflight:
                    self._replace(i)
            raise
        return report

    def _replace_dead_idle_workers(self) -> None:
        """Workers that died between batches (killed by an operator, or by SGLang's engine shutdown, which kills
        every child process of the trainer) are replaced before they are handed an item they would never grade."""
        for i, w in enumerate(self._workers):
            if not w.inflight and not w.proc.is_alive():
                logger.warning("grader worker %d died between batches (exit code %s); started another", w.proc.pid,
                               w.proc.exitcode)
                self._replace(i)

    def _hand_out(self, pending: deque[int], responses, references, sizes) -> None:
        """Round-robin, one item per ready worker per pass, until every worker is full or nothing is left."""
        broken: set[int] = set()  # a send failed: it died; `_collect` sees that through its sentinel
        sent = True
        while pending and sent:
            sent = False
            for i, w in enumerate(self._workers):
                if i in broken or not (pending and w.ready and w.can_take(sizes[pending[0]])):
                    continue
                index = pending.popleft()
                try:
                    w.conn.send((index, responses[index], references[index]))
                except OSError:  # the item never reached it
                    pending.appendleft(index)
                    broken.add(i)
                    continue
                if not w.inflight:
                    w.started = time.monotonic()
                w.inflight.append(index)
                w.inflight_bytes += sizes[index]
                sent = True

    @staticmethod
    def _requeue(w: _Worker, pending: deque[int], sizes, keep_head: bool) -> None:
        """Puts w's unanswered items back at the front of `pending`, in order; the head stays with w when
        `keep_head` (the item that timed out, or that it was grading when it died)."""
        keep = 1 if keep_head and w.inflight else 0
        while len(w.inflight) > keep:
            index = w.inflight.pop()  # from the back, so that appendleft keeps their order
            w.inflight_bytes -= sizes[index]
            pending.appendleft(index)

    def _collect(self, i: int, w: _Worker, now: float, deadline: float, report, responses, pending, sizes) -> int:
        """Handles one worker's news; returns how many items it finished."""
        done = 0
        while w.conn.poll():  # every answer that is there: a worker sends them one after another
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):  # it died (EOF, or ECONNRESET); handled below through its sentinel
                break
            if msg == "ready":
                w.ready = True
                self._start_failures = 0
                continue
            index, score, error = msg
            if not w.inflight or index != w.inflight[0]:
                raise RuntimeError(f"grader worker {w.proc.pid} answered item {index} out of order")
            w.inflight.popleft()
            w.inflight_bytes -= sizes[index]
            w.started = time.monotonic()  # the next item's start as the parent knows it: never before the true one
            report.scores[index] = score
            if error is not None:
                report.errors += 1
                report.failed.append(index)
                logger.warning("grading item %d raised %s; scored 0", index, error)
            done += 1
        if done:
            return done
        if not w.proc.is_alive():
            if not w.ready:
                # Killed by a signal while starting (exit code < 0: OOM killer, an operator): start another.
                # Exited on its own before saying ready: broken start-up; give up after a few in a row.
                code = w.proc.exitcode
                self._replace(i)
                self._start_failures += code is None or code >= 0
                if self._start_failures >= _MAX_START_FAILURES:
                    raise RuntimeError(f"grader workers failed to start {self._start_failures} times in a row "
                                       f"(last exit code {code})")
                logger.warning("grader worker died while starting (exit code %s); started another", code)
                return 0
            item = w.inflight[0] if w.inflight else None
            grading = "" if item is None else f" while grading item {item}; scored 0"
            logger.warning("grader worker %d died (exit code %s)%s", w.proc.pid, w.proc.exitcode, grading)
            self._requeue(w, pending, sizes, keep_head=True)
            self._replace(i)
            if item is not None:
                report.errors += 1
                report.failed.append(item)
                return 1
            return 0
        if not w.ready and now - w.created > _START_TIMEOUT_S:
            raise RuntimeError(f"grader worker {w.proc.pid} did not start within {_START_TIMEOUT_S} s")
        if w.inflight and now - w.started >= deadline:
            item = w.inflight[0]
            response = responses[item]
            logger.warning(
                "grading item %d timed out after %.1fs (response of %d chars: %r...); scored 0",
                item,
                deadline,
                len(response),
                response[:60],
            )
            report.timeouts += 1
            report.timed_out.append(item)
            report.killed_after_s.append(now - w.started)
            self._requeue(w, pending, sizes, keep_head=True)
            self._replace(i)  # SIGKILL: sympy may be stuck in C code
            return 1
        return 0

    def close(self) -> None:
        """Stops the workers (asks, then SIGKILLs whoever is still running). Idempotent."""
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.proc.join(timeout=1.0)
            w.kill()
        self._workers = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default_pool: GraderPool | None = None


def _default() -> GraderPool:
    global _default_pool
    if _default_pool is None or _default_pool.pid != os.getpid():  # none yet, or a forked child
        _default_pool = GraderPool()
        atexit.register(_close_default)
    return _default_pool


def _close_default() -> None:
    global _default_pool
    if _default_pool is not None:
        _default_pool.close()
        _default_pool = None


def grade_batch(responses: list[str], references: list, timeout_s: float = 5.0) -> GradeReport:
    """Grades a batch in the module's default pool (created on first use, closed at exit)."""
    return _default().grade(list(responses), list(references), timeout_s=timeout_s)


def grade(response: str, reference, timeout_s: float = 5.0) -> float:
    """1.0 or 0.0 for one response; 0.0 when grading times out or fails (logged)."""
    return grade_batch([response], [reference], timeout_s=timeout_s).scores[0]
