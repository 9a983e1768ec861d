"""Property tests: GAE against the slow reference under random episode ends, and config round
trips for random valid configs.

The cells' reset-equivalence property (random masks) lives in ``tests/test_nn.py``.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from recurrl.algo.returns import generalized_advantage_estimate
from recurrl.config import _CHOICES, Config, config_from_dict, field_docs, load_config, to_dict
from tests.conftest import slow_gae

# --- GAE -------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    steps=st.integers(1, 12),
    batch=st.integers(1, 3),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    end_rate=st.sampled_from([0.0, 0.2, 0.6]),
)
def test_gae_equals_reference_under_random_episode_ends(steps, batch, gamma, lam, seed, end_rate):
    rng = np.random.default_rng(seed)
    rewards, values, next_values = (rng.normal(size=(steps, batch)) for _ in range(3))
    terminated = rng.random((steps, batch)) < end_rate
    truncated = (rng.random((steps, batch)) < end_rate) & ~terminated
    expected = slow_gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    advantages, returns = generalized_advantage_estimate(
        as_tensor(rewards),
        as_tensor(values),
        as_tensor(next_values),
        as_tensor(terminated),
        as_tensor(truncated),
        gamma,
        lam,
    )
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(returns.numpy(), expected + values, rtol=1e-9, atol=1e-9)


# --- config round trips ----------------------------------------------------------------------

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=8)
SMALL = st.integers(1, 64)
BY_TYPE = {  # a valid value of each type (keys with tighter rules are listed in SPECIAL)
    "bool": st.booleans(),
    "int": SMALL,
    "float": st.floats(1e-6, 1.0),
    "str": WORDS,
    "str | None": st.none() | WORDS,
    "float | None": st.none() | st.floats(1e-6, 1.0),
    "list[int]": st.lists(SMALL, max_size=3),
    "list[str]": st.lists(WORDS, max_size=3),
    "dict[str, Any]": st.dictionaries(WORDS, st.integers(-5, 5) | WORDS, max_size=2),
    "list[dict[str, Any]]": st.lists(
        st.fixed_dictionaries(
            {"path": st.builds(lambda m, c: f"{m}:{c}", WORDS, WORDS)},
            optional={"kwargs": st.dictionaries(WORDS, st.integers(-5, 5), max_size=2)},
        ),
        max_size=2,
    ),
}
SPECIAL = {
    **{key: st.sampled_from(choices) for key, choices in _CHOICES.items()},
    "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:1"]),
    "seed": st.integers(0, 2**31 - 1),
    "policy.log_std_init": st.floats(-5.0, 5.0),
    "run.keep_checkpoints": st.integers(0, 5),
    "eval.every": st.integers(0, 10**6),
    "policy.prev_action": st.sampled_from([True, False, "auto"]),
    "policy.hidden_size": SMALL | st.just("auto"),
    "policy.encoder_sizes": st.lists(SMALL, max_size=3) | st.just("auto"),
}


@st.composite
def valid_configs(draw) -> dict:
    """A nested dict of every key, valid alone and together."""
    data: dict = {}
    for key, type_name, _, _ in field_docs():
        assert key in SPECIAL or type_name in BY_TYPE, f"no strategy for {key}: {type_name}"
        value = draw(SPECIAL[key] if key in SPECIAL else BY_TYPE[type_name])
        node = data
        for part in key.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[key.split(".")[-1]] = value
    ppo = data["ppo"]
    ppo["rollout_len"] = ppo["bptt_len"] * draw(st.integers(1, 8))  # bptt_len divides it
    chunks = data["env"]["num_envs"] * ppo["rollout_len"] // ppo["bptt_len"]
    ppo["num_minibatches"] = draw(st.integers(1, chunks))
    if data["policy"]["core"] not in ("lstm", "gru", "none"):
        data["policy"]["layer_norm"] = False  # layer-normalised cells exist for these only
    if data["policy"]["core"] in ("transformer", "tcn"):
        data["policy"]["learned_initial_state"] = False  # a window of past steps has no start
    return data


@settings(max_examples=60, deadline=None)
@given(data=valid_configs())
def test_config_round_trips_through_dict_and_yaml(data):
    config = config_from_dict(data)
    assert isinstance(config, Config)
    assert config_from_dict(to_dict(config)) == config
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(to_dict(config)))) == config
    overrides = [f"{key}={json.dumps(value)}" for key, value in _leaves(to_dict(config))]
    assert load_config(None, overrides) == config  # the command-line form too


def _leaves(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, value)`` of every key (``env.kwargs`` is one value)."""
    out = []
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("kwargs",):
            out.extend(_leaves(value, f"{prefix}{key}."))
        else:
            out.append((prefix + key, value))
    return out
