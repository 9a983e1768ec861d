"""Refused spaces, bad ``policy.*`` / ``env.wrappers`` settings: clear errors, at construction."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from recurrl.algo.make_env import make_vector_env
from recurrl.app.cli import main
from recurrl.config import ConfigError, EnvConfig, PolicyConfig, load_config
from recurrl.policy import ActorCritic
from recurrl.policy.spaces import UnsupportedSpaceError
from tests import space_envs  # noqa: F401  (registers recurrl_test/* ids)

BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
DISCRETE = spaces.Discrete(3)


class CustomSpace(gym.Space):
    pass


REFUSED_OBSERVATIONS = [
    (spaces.Text(5), r"observation space Text\(1, 5, .*\) is not supported: encode the text"),
    (
        spaces.Graph(BOX, spaces.Discrete(2)),
        r"observation space Graph\(.*\) is not supported: convert the graph",
    ),
    (spaces.Sequence(BOX), r"observation space Sequence\(.*\) is not supported: pad"),
    (spaces.OneOf([BOX, DISCRETE]), r"observation space OneOf\(.*\) is not supported"),
    (
        spaces.Box(0, np.inf, (3,), np.int64),
        r"observation space Box\(0, 9223372036854775807, \(3,\), int64\) is an unbounded integer "
        r"space: give it finite bounds or rescale it",
    ),
    (CustomSpace(), r"observation space .*CustomSpace.* is not supported: use Box, Discrete"),
    (
        spaces.Dict({"pos": BOX, "note": spaces.Text(4)}),
        r"observation space\['note'\] Text\(.*\) is not supported: encode the text as token ids "
        r"with an ObservationWrapper",
    ),
    (
        spaces.Tuple((BOX, spaces.Dict({"items": spaces.Sequence(DISCRETE)}))),
        r"observation space\[1\]\['items'\] Sequence\(Discrete\(3\), stack=False\) is not "
        r"supported: pad the variable-length sequence",
    ),
]


@pytest.mark.parametrize(("space", "message"), REFUSED_OBSERVATIONS)
def test_refused_observation_spaces_name_the_space_and_the_fix(space, message):
    with pytest.raises(UnsupportedSpaceError, match=message):
        ActorCritic(space, DISCRETE)


REFUSED_ACTIONS = [
    (spaces.Tuple((DISCRETE, DISCRETE)), r"action space Tuple\(.*\) \(Tuple\) is not supported"),
    (spaces.Dict({"a": DISCRETE}), r"ActionWrapper that flattens it into one MultiDiscrete"),
    (spaces.Text(3), r"action space Text\(.*\) \(Text\) is not supported"),
    (spaces.Box(-np.inf, np.inf, (2,)), r"infinite bounds: give it finite bounds"),
    (spaces.Box(0, 5, (2,), np.int64), r"has dtype int64: use a float Box"),
]


@pytest.mark.parametrize(("space", "message"), REFUSED_ACTIONS)
def test_refused_action_spaces(space, message):
    with pytest.raises(UnsupportedSpaceError, match=message):
        ActorCritic(BOX, space)


def test_action_mask_must_fit_discrete_actions():
    obs = spaces.Dict({"x": BOX, "action_mask": spaces.MultiBinary(3)})
    with pytest.raises(UnsupportedSpaceError, match=r"masks discrete actions, but the action"):
        ActorCritic(obs, BOX)
    with pytest.raises(UnsupportedSpaceError, match=r"expected a MultiBinary or 0/1 Box with 4"):
        ActorCritic(obs, spaces.Discrete(4))
    only_mask = spaces.Dict({"action_mask": spaces.MultiBinary(3)})
    with pytest.raises(UnsupportedSpaceError, match="nothing to encode besides 'action_mask'"):
        ActorCritic(only_mask, DISCRETE)


def test_cnn_encoder_needs_an_image_like_part():
    with pytest.raises(UnsupportedSpaceError, match=r"policy.encoder=cnn: .* has no Box part"):
        ActorCritic(spaces.Dict({"a": BOX, "b": DISCRETE}), DISCRETE, PolicyConfig(encoder="cnn"))


def test_command_line_refuses_a_text_env_in_one_line_before_starting(tmp_path, capsys):
    code = main(
        [
            "train",
            "experiments/quickstart.yaml",
            f"run.dir={tmp_path}/run",
            "env.id=tests.space_envs:recurrl_test/TextObservation-v0",
            "env.normalize_obs=false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "observation space Text(1, 8" in err and "ObservationWrapper" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


BAD_SETTINGS = [
    (["policy.encoder=rnn"], "policy.encoder: must be one of auto, mlp, cnn, got 'rnn'"),
    (["policy.prev_action=maybe"], "policy.prev_action: expected true, false or auto"),
    (["env.wrappers={path: a:B}"], "env.wrappers: expected a list"),
    (["env.wrappers=[envs.wrappers]"], "env.wrappers[0]: expected a mapping"),
    (["env.wrappers=[{path: envs.wrappers}]"], "env.wrappers[0].path: expected 'package."),
    (["env.wrappers=[{klass: 'a:B'}]"], "env.wrappers[0]: unknown key 'klass'"),
    (["env.wrappers=[{path: 'a:B', kwargs: 3}]"], "env.wrappers[0].kwargs: expected a mapping"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_SETTINGS)
def test_bad_settings_name_the_dotted_key(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


WRAPPER_ERRORS = [
    (
        [{"path": "recurrl.envs.wrapers:Flicker"}],
        "env.wrappers[0]: cannot import module 'recurrl.envs.wrapers'",
    ),
    (
        [
            {"path": "recurrl.envs.wrappers:Flicker", "kwargs": {"p": 0.5}},
            {"path": "recurrl.envs:Nope"},
        ],
        "env.wrappers[1]: module 'recurrl.envs' has no attribute 'Nope'",
    ),
    (
        [{"path": "recurrl.envs.wrappers:MaskObservation", "kwargs": {"colour": 1}}],
        "env.wrappers[0]: recurrl.envs.wrappers:MaskObservation rejected its arguments",
    ),
]


@pytest.mark.parametrize(("wrappers", "message"), WRAPPER_ERRORS)
def test_wrapper_errors_name_the_entry(wrappers, message):
    config = EnvConfig(id="recurrl/CartPoleNoVelocity-v0", num_envs=2, wrappers=wrappers)
    with pytest.raises(ConfigError) as error:
        make_vector_env(config)
    assert message in str(error.value)


def test_wrappers_apply_to_each_env_and_refuse_native_vectorisation():
    wrappers = [{"path": "tests.space_envs:BlankObservation"}]
    envs = make_vector_env(EnvConfig(id="recurrl/TMaze-v0", num_envs=3, wrappers=wrappers))
    assert isinstance(envs, gym.vector.SyncVectorEnv)  # auto picks sync: native has no single envs
    obs, _ = envs.reset(seed=0)
    assert obs.shape[0] == 3 and not obs.any()
    envs.close()
    native = EnvConfig(id="recurrl/TMaze-v0", vectorization="native", wrappers=wrappers)
    with pytest.raises(ConfigError, match="env.wrappers: a native vector env has no single envs"):
        make_vector_env(native)
