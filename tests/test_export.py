"""Exported policies (ONNX, TorchScript) act as ``policy.act`` over whole episodes with resets.

Each case builds a policy with random weights (perturbed so actions vary), exports it, then runs
a vector env of several copies for enough steps that episodes end and restart: the exported
file, fed its own state back, must give the greedy actions of ``policy.act(...,
deterministic=True)`` exactly, and its values and next state within float tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

import tests.space_envs  # noqa: F401  (registers recurrl_test/*)
from recurrl.algo.make_env import make_vector_env
from recurrl.app.cli import main
from recurrl.config import EnvConfig, PolicyConfig
from recurrl.policy import ActorCritic
from recurrl.policy.export import ExportError, export_policy
from recurrl.policy.inputs import null_action
from recurrl.policy.spaces import ACTION_MASK_KEY
from recurrl.policy.tree import as_observation, observation_leaves, stack_observations

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

NUM_ENVS = 3  # the trace uses 2: the batch dimension must stay free
TOLERANCE = 1e-5

RANDOM_SPACE = "recurrl_test/RandomSpace-v0"
MASKED_DICT = {
    "observation_space": spaces.Dict(
        {
            "state_vector": spaces.Box(-1.0, 1.0, (2, 2), np.float32),  # not a recurrent state
            ACTION_MASK_KEY: spaces.MultiBinary(4),
        }
    ),
    "action_space": spaces.Discrete(4),
    "episode_length": 7,
}
NESTED_TUPLE = {
    "observation_space": spaces.Tuple(
        (spaces.Box(-1.0, 1.0, (3,), np.float32), spaces.Dict({"x": spaces.Discrete(5)}))
    ),
    "action_space": spaces.MultiBinary(3),
    "episode_length": 6,
}

# (name, env id, env kwargs, policy options, normalize_obs)
CASES = [
    ("lstm-tmaze", "recurrl/TMaze-v0", {"length": 4}, {"num_layers": 2}, False),
    (
        "gru-shared-cartpole",
        "recurrl/CartPoleNoVelocity-v0",
        {},
        {"core": "gru", "shared_core": True, "head_sizes": [8]},
        True,
    ),
    ("none-cartpole", "recurrl/CartPoleNoVelocity-v0", {}, {"core": "none"}, True),
    (
        "lstm-previous-learned-box",
        "recurrl/PointRecall-v0",
        {"travel_steps": 12},
        {"prev_action": True, "prev_reward": True, "learned_initial_state": True},
        True,
    ),
    (
        "gru-layernorm-squash-box",
        "recurrl/PointRecall-v0",
        {"travel_steps": 12},
        {"core": "gru", "layer_norm": True, "squash_actions": True, "prev_reward": True},
        False,
    ),
    (
        "lstm-layernorm-dict-image",
        "recurrl_test/DictCue-v0",
        {},
        {"layer_norm": True, "learned_initial_state": True, "prev_action": True},
        True,
    ),
    ("gru-multidiscrete", "recurrl_test/MultiTarget-v0", {}, {"core": "gru"}, False),
    ("lstm-action-mask", RANDOM_SPACE, MASKED_DICT, {"shared_core": True}, True),
    ("none-nested-multibinary", RANDOM_SPACE, NESTED_TUPLE, {"core": "none"}, True),
]


def make_policy(env_id: str, kwargs: dict, options: dict, normalize_obs: bool):
    """The envs and a policy with perturbed weights and non-trivial running statistics."""
    envs = make_vector_env(EnvConfig(id=env_id, kwargs=kwargs, num_envs=NUM_ENVS))
    torch.manual_seed(0)
    config = PolicyConfig(hidden_size=8, encoder_sizes=[8], **options)
    policy = ActorCritic(
        envs.single_observation_space, envs.single_action_space, config, normalize_obs
    )
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    envs.single_observation_space.seed(1)
    if normalize_obs:
        batch = [envs.single_observation_space.sample() for _ in range(16)]
        policy.obs_normalizer.update(as_observation(stack_observations(batch)))
    policy.update_reward_statistics(torch.randn(32).double() * 3 + 1)
    return envs, policy.eval()


class Exported:
    """The exported file run by onnxruntime or ``torch.jit.load``: ``call(inputs) -> outputs``."""

    def __init__(self, path: Path, format: str) -> None:
        signature = json.loads(Path(f"{path}.json").read_text())
        self.inputs = signature["inputs"]
        self.state_names = signature["state"]
        self.output_names = [spec["name"] for spec in signature["outputs"]]
        if format == "onnx":
            ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            assert [i.name for i in self.session.get_inputs()] == [s["name"] for s in self.inputs]
            assert [o.name for o in self.session.get_outputs()] == self.output_names
        else:
            self.module = torch.jit.load(str(path))
        self.format = format

    def __call__(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [np.asarray(values[s["name"]]).astype(s["dtype"]) for s in self.inputs]
        if self.format == "onnx":
            names = [spec["name"] for spec in self.inputs]
            outputs = self.session.run(None, dict(zip(names, arrays, strict=True)))
        else:
            outputs = [x.numpy() for x in self.module(*map(torch.as_tensor, arrays))]
        return dict(zip(self.output_names, outputs, strict=True))


def export(policy: ActorCritic, tmp_path: Path, format: str) -> Path:
    if format == "onnx":
        pytest.importorskip("onnx", reason="onnx not installed (pip install 'recurrl[export]')")
    path = tmp_path / ("policy.onnx" if format == "onnx" else "policy.pt")
    export_policy(policy, path, format)
    return path


def run_episodes(envs, policy: ActorCritic, exported: Exported, steps: int) -> int:
    """Step ``envs`` with ``policy.act`` and compare the exported step; returns resets seen."""
    obs, _ = envs.reset(seed=0)
    space = policy.observation_space
    state_names = exported.state_names
    state = policy.initial_state(NUM_ENVS)
    exported_state = {name: s.numpy() for name, s in zip(state_names, state, strict=True)}
    starts = np.ones(NUM_ENVS, dtype=np.float32)
    prev_action = null_action(policy.action_space, NUM_ENVS)
    prev_reward = np.zeros(NUM_ENVS, dtype=np.float32)
    resets = 0
    for _ in range(steps):
        action, next_state = policy.act(
            obs, state, starts, True, prev_action=prev_action, prev_reward=prev_reward
        )
        with torch.no_grad():
            value = policy.value(
                as_observation(obs),
                state,
                torch.as_tensor(starts),
                torch.as_tensor(np.asarray(prev_action)) if policy.config.prev_action else None,
                torch.as_tensor(prev_reward) if policy.config.prev_reward else None,
            )
        leaves = observation_leaves(space, obs)
        names = [s["name"] for s in exported.inputs if s["name"].startswith("obs")]
        inputs = dict(zip(names, leaves, strict=True)) | exported_state
        inputs |= {"episode_start": starts, "prev_action": prev_action, "prev_reward": prev_reward}
        out = exported(inputs)

        if np.issubdtype(action.dtype, np.floating):
            np.testing.assert_allclose(out["action"], action, atol=TOLERANCE)
        else:
            np.testing.assert_array_equal(out["action"], action)
        np.testing.assert_allclose(out["value"], value.numpy(), atol=TOLERANCE)
        for name, expected in zip(state_names, next_state, strict=True):
            np.testing.assert_allclose(out[f"next_{name}"], expected.numpy(), atol=TOLERANCE)

        exported_state = {name: out[f"next_{name}"] for name in state_names}
        state = next_state
        obs, reward, terminated, truncated, _ = envs.step(action)
        starts = (terminated | truncated).astype(np.float32)
        resets += int(starts.sum())
        prev_action, prev_reward = action, reward.astype(np.float32)
    return resets


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
@pytest.mark.parametrize(("name", "env_id", "kwargs", "options", "normalize"), CASES)
def test_exported_step_acts_as_policy_act(
    name, env_id, kwargs, options, normalize, format, tmp_path
):
    envs, policy = make_policy(env_id, kwargs, options, normalize)
    impls = [m.impl for m in policy.modules() if hasattr(m, "impl")]
    exported = Exported(export(policy, tmp_path, format), format)
    assert [m.impl for m in policy.modules() if hasattr(m, "impl")] == impls  # left as it was
    resets = run_episodes(envs, policy, exported, steps=40)
    envs.close()
    assert resets >= 2, "the episodes must end and restart within the run"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run folder from a tiny training run (prev reward on, to export it)."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    overrides = [
        f"run.dir={run_dir}",
        "env.num_envs=4",
        "ppo.total_steps=256",
        "ppo.rollout_len=32",
        "ppo.bptt_len=8",
        "ppo.num_minibatches=2",
        "ppo.update_epochs=1",
        "policy.hidden_size=16",
        "policy.encoder_sizes=[16]",
        "policy.prev_reward=true",
    ]
    args = ["train", "experiments/quickstart.yaml", *overrides, "--quiet", "--eval-episodes=0"]
    assert main(args) == 0
    return run_dir


def test_cli_export_writes_the_file_and_its_signature(trained_run, capsys):
    capsys.readouterr()
    assert main(["export", str(trained_run), "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    path = trained_run / "policy.pt"
    assert f"wrote {path}" in out
    printed = [line.split() for line in out.splitlines()]
    assert ["obs", "[B,", "2]", "float32"] in printed
    assert ["state_h", "[1,", "B,", "16]", "float32"] in printed
    assert ["next_critic_state_c", "[1,", "B,", "16]", "float32"] in printed
    signature = json.loads((trained_run / "policy.pt.json").read_text())
    inputs = [spec["name"] for spec in signature["inputs"]]
    assert inputs == [
        "obs",
        "state_h",
        "state_c",
        "critic_state_h",
        "critic_state_c",
        "episode_start",
        "prev_reward",
    ]
    assert [spec["name"] for spec in signature["outputs"]][:3] == ["action", "logits", "value"]
    assert signature["inputs"][1]["shape"] == [1, "B", 16]
    module = torch.jit.load(str(path))
    batch = [torch.zeros(5, 2), *(torch.zeros(1, 5, 16) for _ in range(4))]
    action, logits, value, *state = module(*batch, torch.ones(5), torch.zeros(5))
    assert action.shape == (5,) and logits.shape == (5, 2) and len(state) == 4

    pytest.importorskip("onnx", reason="onnx not installed (pip install 'recurrl[export]')")
    out_file = trained_run / "elsewhere" / "cartpole.onnx"
    assert main(["export", str(trained_run), "--out", str(out_file)]) == 0
    assert out_file.is_file() and Path(f"{out_file}.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "--format must be one of onnx, torchscript, got 'tflite'"),
        (["--format", "onnx"], "--format onnx needs the onnx package"),
    ],
)
def test_cli_export_refuses_in_one_line(args, message, trained_run, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # as if not installed
    capsys.readouterr()
    assert main(["export", str(trained_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (trained_run / "policy.onnx").exists()


def test_cli_export_of_a_missing_run(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint file or run directory" in capsys.readouterr().err


def test_unknown_core_is_refused_by_name():
    envs, policy = make_policy("recurrl/TMaze-v0", {"length": 4}, {}, False)
    envs.close()
    policy.actor_core = torch.nn.Identity()
    with pytest.raises(ExportError, match="core Identity cannot be exported"):
        export_policy(policy, "unused.pt", "torchscript")
