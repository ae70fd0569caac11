"""The code examples of docs/design.md run as written: a reward and a state column of one's own, registered by name."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import tsrl_env
from tsrl_env import DeepfakeCurriculumEnv

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DESIGN.read_text(), flags=re.DOTALL)


def test_the_design_holds_a_reward_and_a_state_column_example():
    assert len(EXAMPLES) == 2
    assert all(len(example.strip().splitlines()) <= 25 for example in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=["reward", "state_column"])
def test_design_example_runs(example, one_torch_thread, capsys):
    exec(compile(example, str(DESIGN), "exec"), {"__name__": "design_example"})
    assert capsys.readouterr().out.strip()


def test_a_registered_column_and_reward_reach_the_observation_and_the_info(one_torch_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the examples may have registered their names in this process
        for example in EXAMPLES:
            exec(compile(example, str(DESIGN), "exec"), {"__name__": "design_example"})
    env = DeepfakeCurriculumEnv(
        **tsrl_env.TINY_SETTINGS, reward="loss_drop", state_columns=[*tsrl_env.DEFAULT_STATE_COLUMNS, "visits"]
    )
    states, _ = env.reset(seed=0)
    # The tiny config warms up for one epoch: every sample was visited once before this forward.
    np.testing.assert_allclose(env.state_layout.values(states, "visits"), np.tanh(0.2), rtol=1e-6)
    _, _, _, _, info = env.step(np.zeros(env.batch_size, np.float32))
    assert not info["sample_rewards"].any(), "a weight of 0 earns 0"
