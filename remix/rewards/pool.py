"""GraderPool: grading that never hangs, in long-lived worker processes with a wall-clock deadline per item.

math-verify and sympy can take unbounded time (or blow the C stack) on hostile model output, and
math-verify's own SIGALRM timeouts work only on a main thread. So grading runs in a few long-lived worker
processes ('forkserver' context, never plain fork: the parent holds torch threads), each grading its items
one after another, with a wall-clock deadline per item enforced by the parent. A worker past its deadline is
SIGKILLed and replaced and the item scores 0 (counted in `timeouts`); a worker that dies, or an item whose
grading raised, scores 0 and is counted in `errors`. Both are logged in one line per `grade` call. A
worker holds a few items at a time (`PIPELINE_ITEMS`, at most `PIPELINE_BYTES` of text), so it never waits a round
trip between two items (the
round trip takes longer than a grade of a short answer); the items queued behind one that is killed go back to
the pool and are graded again by another worker.

What a worker computes is the pool's scorer: a `RewardSet` (the trainer's --reward functions, items are dataset
rows), or by default one function of (response, reference) such as the math grader (the benchmarks' path).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
import pickle
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Self

from remix.rewards.functions import RewardSet, Scored
from remix.rewards.math_reward import GRADING_RULES, GradingRule, verify_in_process

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0
_MAX_START_FAILURES = 3
# Items handed to one worker before its first answer comes back. The bytes bound keeps what is in flight
# below a pipe's buffer (16 KiB on macOS, 64 KiB on Linux): the parent must never block in a send, where it
# could not enforce a deadline. One item is always allowed, whatever its size.
PIPELINE_ITEMS = 8
PIPELINE_BYTES = 16 * 1024


@dataclass(frozen=True)
class ByReference:
    """The pool's default scorer: one function `verify_fn(response, reference) -> float`; items are references."""

    verify_fn: object
    names: tuple[str, ...] = ("score",)

    def prepare(self) -> None:
        """Nothing to import ahead of the first item."""

    def score(self, response: str, reference) -> Scored:
        value = float(self.verify_fn(response, reference))
        return Scored(value, (value,))


def _worker_main(conn, scorer) -> None:
    """Worker loop: receive (index, response, item), send back (index, Scored)."""
    import signal

    import math_verify.grader
    import math_verify.parser

    # Ctrl-C in a terminal (or a SIGTERM to the job's process group) reaches every process: the parent
    # decides when workers stop (it closes or SIGKILLs them; an orphan sees EOF on its pipe), so a worker
    # neither dies mid-item, which would score that item 0, nor prints a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The user's reward modules are imported now, under the start-up bound, not inside the first item's deadline.
    scorer.prepare()

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
        index, response, item = msg
        try:
            scored = scorer.score(response, item)
        except Exception as e:  # noqa: BLE001 -- not swallowed: the parent counts it in `errors` and logs it
            scored = Scored(0.0, (0.0,) * len(scorer.names), type(e).__name__)
        conn.send((index, scored))


@dataclass
class GradeReport:
    scores: list[float]  # per item: the weighted sum of the scorer's functions (0 for a timeout or a crash)
    parts: list[tuple[float, ...]] = field(default_factory=list)  # per item: each function's value (by `names`)
    names: tuple[str, ...] = ()
    timeouts: int = 0
    errors: int = 0  # worker crashes and exceptions raised while grading an item
    timed_out: list[int] = field(default_factory=list)  # indices of the items that timed out
    # for each of `timed_out`: how long the item had been with its worker when the pool killed it (seconds);
    # never less than the deadline (later only by how late the pool woke up on a busy machine)
    killed_after_s: list[float] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # indices of the items counted in `errors`
    error_messages: list[str] = field(default_factory=list)  # for each of `failed`: what went wrong

    def part_sums(self) -> dict[str, float]:
        """Each function's values summed over the items, by name (for means over processes)."""
        return {name: sum(p[j] for p in self.parts) for j, name in enumerate(self.names)}


class _Worker:
    def __init__(self, ctx, scorer):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, scorer), daemon=True)
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

    def __init__(self, num_workers: int = 2, timeout_s: float = 5.0, verify_fn=None, rule: GradingRule = "boxed",
                 rewards: RewardSet | None = None):
        """`rewards`: the reward functions (then `grade` takes dataset rows). Without it items are references, graded
        by `verify_in_process` under `rule`, or by `verify_fn(response, reference)` (tests)."""
        if num_workers < 1 or timeout_s <= 0:
            raise ValueError("num_workers must be >= 1 and timeout_s > 0")
        if rule not in GRADING_RULES:
            raise ValueError(f"unknown grading rule {rule!r}; choose one of {GRADING_RULES}")
        if rewards is not None and verify_fn is not None:
            raise ValueError("give rewards or verify_fn, not both")
        if verify_fn is None:
            verify_fn = functools.partial(verify_in_process, rule=rule)
        self.rule = rule
        self.timeout_s = timeout_s
        # picklable: a RewardSet holds specs; a verify_fn must be a module-level function (tests swap it)
        self._scorer = rewards if rewards is not None else ByReference(verify_fn)
        self.pid = os.getpid()
        self._ctx = mp.get_context("forkserver")
        # Import math-verify/sympy once in the fork server, so a replacement worker starts in ms; the fork
        # server also ignores SIGTERM (remix/rewards/forkserver.py says why).
        self._ctx.set_forkserver_preload(["__main__", __name__, "remix.rewards.forkserver"])
        self._workers = [_Worker(self._ctx, self._scorer) for _ in range(num_workers)]
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
        self._workers[i] = _Worker(self._ctx, self._scorer)

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the scorer's functions, the order of `GradeReport.parts`."""
        return self._scorer.names

    def grade(self, responses: list[str], references: list, timeout_s: float | None = None) -> GradeReport:
        """Scores every response against its item (a reference, or a dataset row with `rewards`)."""
        if len(responses) != len(references):
            raise ValueError(f"{len(responses)} responses but {len(references)} references")
        if not self._workers:
            raise RuntimeError("GraderPool is closed")
        deadline = self.timeout_s if timeout_s is None else timeout_s
        self._replace_dead_idle_workers()
        if isinstance(self._scorer, ByReference) and any(isinstance(item, dict) for item in references):
            raise TypeError("this pool grades responses against reference answers, and was handed dataset rows: "
                            "build it with rewards=RewardSet(...) (TrainConfig.rewards()) to score rows")
        zeros = (0.0,) * len(self.names)
        report = GradeReport(scores=[0.0] * len(responses), parts=[zeros] * len(responses), names=self.names)
        pending, remaining = deque(range(len(responses))), len(responses)
        # What a send puts in the pipe, so that the bytes in flight stay below its buffer: the response, and the item
        # (a row may carry long columns such as test cases), pickled once per distinct row; 256 for the rest.
        item_bytes: dict[int, int] = {}
        for item in references:
            if id(item) not in item_bytes:
                item_bytes[id(item)] = len(pickle.dumps(item))
        sizes = [len(r.encode("utf-8", "surrogatepass")) + item_bytes[id(item)] + 256
                 for r, item in zip(responses, references)]
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
        self._log_summary(report, responses, deadline)
        return report

    @staticmethod
    def _log_summary(report: GradeReport, responses: list[str], deadline: float) -> None:
        """One warning line for the call's timeouts and failures (none when there were none)."""
        problems = []
        if report.timeouts:
            item = min(report.timed_out)
            problems.append(f"{report.timeouts} timed out after {deadline:g} s and scored 0 (first: item {item}, "
                            f"{len(responses[item])} chars beginning {responses[item][:40]!r})")
        if report.failed:
            first = min(range(len(report.failed)), key=lambda j: report.failed[j])
            problems.append(f"a reward function failed on {len(report.failed)} and scored 0 there (first: item "
                            f"{report.failed[first]}: {report.error_messages[first]})")
        if problems:
            logger.warning("grading %d responses: %s", len(responses), "; ".join(problems))

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
        """Handles one worker's news: its answers, else its death, its start-up timeout or its item's deadline.
        Returns how many items it finished."""
        done = self._read_answers(w, report, sizes)
        if done:
            return done
        if not w.proc.is_alive():
            return self._on_death(i, w, report, pending, sizes)
        if not w.ready and now - w.created > _START_TIMEOUT_S:
            raise RuntimeError(f"grader worker {w.proc.pid} did not start within {_START_TIMEOUT_S} s")
        if w.inflight and now - w.started >= deadline:
            return self._on_deadline(i, w, now, deadline, report, responses, pending, sizes)
        return 0

    def _read_answers(self, w: _Worker, report: GradeReport, sizes) -> int:
        """Every answer the worker has sent (one after another), and its "ready"; how many items it finished."""
        done = 0
        while w.conn.poll():
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):  # it died (EOF, or ECONNRESET); its sentinel says so next
                break
            if msg == "ready":
                w.ready = True
                self._start_failures = 0
                continue
            index, scored = msg
            if not w.inflight or index != w.inflight[0]:
                raise RuntimeError(f"grader worker {w.proc.pid} answered item {index} out of order")
            w.inflight.popleft()
            w.inflight_bytes -= sizes[index]
            w.started = time.monotonic()  # the next item's start as the parent knows it: never before the true one
            report.scores[index], report.parts[index] = scored.total, scored.parts
            if scored.error is not None:
                report.errors += 1
                report.failed.append(index)
                report.error_messages.append(scored.error)
            done += 1
        return done

    def _on_death(self, i: int, w: _Worker, report: GradeReport, pending, sizes) -> int:
        """A worker that died is replaced. Dead while starting: killed by a signal (exit code < 0: the OOM killer,
        an operator) starts another; exited on its own is a broken start-up, given up after a few in a row. Dead
        while grading: the item it was grading scores 0 (an error), the ones queued behind it go back."""
        if not w.ready:
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
        if item is None:
            return 0
        report.errors += 1
        report.failed.append(item)
        report.error_messages.append(f"its grader worker died (exit code {w.proc.exitcode})")
        return 1

    def _on_deadline(self, i: int, w: _Worker, now: float, deadline: float, report: GradeReport, responses,
                     pending, sizes) -> int:
        """The item at the head of the worker's queue ran past its deadline: it scores 0 (a timeout), the worker
        is SIGKILLed (sympy may be stuck in C code) and replaced, the items queued behind it go back."""
        item = w.inflight[0]
        response = responses[item]
        logger.debug("grading item %d timed out after %.1fs (response of %d chars: %r...); scored 0", item,
                       deadline, len(response), response[:60])
        report.timeouts += 1
        report.timed_out.append(item)
        report.killed_after_s.append(now - w.started)
        self._requeue(w, pending, sizes, keep_head=True)
        self._replace(i)
        return 1

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
