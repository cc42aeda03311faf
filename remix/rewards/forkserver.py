"""Imported only by the grader pool's fork server (remix.rewards.pool preloads it there): it ignores SIGTERM.

A SIGTERM sent to a job's whole process group (a scheduler, `kill -TERM -PGID`, torchrun's shutdown)
would otherwise kill the fork server, Python's default. Its death closes the pipes through which the
pool learns that a worker exited, so every worker would look dead at once and one grading an item would
be killed and replaced, scoring that item 0. The fork server still exits when the training process does
(it watches a pipe from it), and the training process handles SIGTERM itself (remix.runner).
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
