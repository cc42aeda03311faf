"""Training data: the built-in `arith` task, packaged MATH/AIME training sets, and user files."""

from remix.data.arith import ArithTask
from remix.data.files import DataError, load_problem_file
from remix.data.problems import Problem, ProblemSource
from remix.data.tasks import load_task

__all__ = ["ArithTask", "DataError", "Problem", "ProblemSource", "load_problem_file", "load_task"]
