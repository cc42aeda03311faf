"""A reward file whose import fails (tests/unit/test_reward_functions.py)."""

raise RuntimeError("this module cannot be imported")
