"""The platform registry imports only the selected platform and explains what is missing."""

import pytest

from platforms import get_platform


def test_cpu_platform_has_the_factories():
    cpu = get_platform("cpu")
    assert callable(cpu.make_rollout) and callable(cpu.make_learner)


@pytest.mark.parametrize("name", ["cuda", "xla"])
def test_unimplemented_platforms_say_so(name):
    with pytest.raises(NotImplementedError, match=f"--platform {name}: not implemented"):
        get_platform(name)


def test_unknown_platform_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        get_platform("tpu")
