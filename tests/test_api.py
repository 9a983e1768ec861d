"""recurrl.PPO: training from Python on an id, an env factory or a VectorEnv; the same config
validation as YAML; save / load / predict; resume from Python; the README's script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import recurrl
from recurrl.app.cli import main
from recurrl.config import ConfigError, load_config
from recurrl.run.checkpoints import CheckpointError
from recurrl.run.run_dir import read_metrics

ROOT = Path(__file__).resolve().parent.parent

SMALL = {
    "policy": {"hidden_size": 16, "encoder_sizes": [16]},
    "ppo": {
        "rollout_len": 16,
        "bptt_len": 8,
        "num_minibatches": 2,
        "update_epochs": 1,
        "anneal_lr": False,  # so a finished run can go on
    },
}


class Recall(gym.Env):
    """A cue (+1 / -1) shown at the first step only; at step 4 say which it was."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 4) -> None:
        self.length = length

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return np.array([2 * self.cue - 1, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        reward = float(action == self.cue) if done else 0.0
        return np.array([0.0, self.t / self.length], np.float32), reward, done, False, {}


def small(tmp_path, name="run", **extra):
    """Keyword sections of a fast run in ``tmp_path / name`` (``extra`` sections merged)."""
    sections = {**SMALL, "run": {"dir": str(tmp_path / name)}, "device": "cpu"}
    for key, value in extra.items():
        sections[key] = {**sections.get(key, {}), **value} if isinstance(value, dict) else value
    return sections


def test_train_on_an_env_class_defined_here(tmp_path):
    model = recurrl.PPO({"id": Recall, "num_envs": 4, "kwargs": {"length": 3}}, **small(tmp_path))
    model.learn(total_steps=256, callbacks=[])
    result = model.result
    assert result.global_step == 256 and (result.run_dir / "checkpoints" / "final.pt").is_file()
    assert model.config.env.id == f"<callable {__name__}:Recall>"
    assert [m["global_step"] for m in read_metrics(result.run_dir)] == [64, 128, 192, 256]
    assert all(m["episodic_length"] == 3 for m in read_metrics(result.run_dir))  # kwargs given
    policy = recurrl.load_policy(result.run_dir)  # spaces from the checkpoint, no env needed
    assert policy.observation_space == Recall.observation_space
    assert main(["eval", str(result.run_dir), "--episodes", "2"]) == 0  # Recall imported again


def test_train_on_a_vector_env_instance(tmp_path):
    envs = gym.vector.SyncVectorEnv([Recall] * 4)
    model = recurrl.PPO(envs, **small(tmp_path, ppo={"total_steps": 128}))
    assert model.config.env.num_envs == 32  # the default; checked against the envs in learn
    with pytest.raises(ConfigError, match=r"env.num_envs: the VectorEnv passed has 4 envs"):
        model.learn()
    model = recurrl.PPO({"id": envs, "num_envs": 4}, **small(tmp_path, ppo={"total_steps": 128}))
    model.learn()
    assert model.result.global_step == 128
    assert model.config.env.id.startswith("<VectorEnv gymnasium.vector.sync_vector_env:")
    envs.step(envs.action_space.sample())  # the caller's envs stay open
    with pytest.raises(ConfigError, match=r"eval.every: .*pass eval_env=FACTORY"):
        recurrl.PPO({"id": envs, "num_envs": 4}, **small(tmp_path, "b", eval={"every": 64})).learn(
            128
        )
    model = recurrl.PPO(
        {"id": envs, "num_envs": 4},
        **small(tmp_path, "c", eval={"every": 64, "episodes": 2}),
        eval_env=Recall,
        quiet=True,
    ).learn(128)
    assert read_metrics(model.run_dir)[-1]["eval_return_mean"] is not None
    envs.close()


def test_train_on_an_id(tmp_path):
    model = recurrl.PPO({"id": "recurrl/TMaze-v0", "num_envs": 4}, **small(tmp_path), quiet=True)
    model.learn(128)
    assert model.config.env.id == "recurrl/TMaze-v0" and model.result.global_step == 128


def test_a_bad_key_is_refused_as_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ppo:\n  bptt_lenn: 8\n")
    with pytest.raises(ConfigError) as from_yaml:
        load_config(path)
    with pytest.raises(ConfigError) as from_python:
        recurrl.PPO(Recall, ppo={"bptt_lenn": 8})
    assert str(from_python.value) == str(from_yaml.value)
    assert "unknown key ppo.bptt_lenn (did you mean ppo.bptt_len?)" in str(from_python.value)
    with pytest.raises(ConfigError, match=r"^unknown key ppo_ \(did you mean ppo\?\)$"):
        recurrl.PPO(Recall, ppo_={"bptt_len": 8})
    with pytest.raises(ConfigError, match=r"ppo.bptt_len=5 must divide ppo.rollout_len=16"):
        recurrl.PPO(Recall, **small(tmp_path), overrides=["ppo.bptt_len=5"])
    with pytest.raises(ConfigError, match=r"env: got the env instance"):
        recurrl.PPO(Recall())
    cli = subprocess.run(
        [sys.executable, "-m", "recurrl.app.cli", "train", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert cli.returncode == 2 and str(from_yaml.value) in cli.stderr


def test_save_load_predict_round_trip(tmp_path):
    model = recurrl.PPO({"id": Recall, "num_envs": 4}, **small(tmp_path), quiet=True).learn(128)
    path = model.save(tmp_path / "policy.pt")
    loaded = recurrl.PPO.load(path)
    env = Recall()
    obs, _ = env.reset(seed=0)
    state_a = state_b = None
    for step in range(4):
        action_a, state_a = model.predict(obs, state_a, episode_start=step == 0)
        action_b, state_b = loaded.predict(obs, state_b, episode_start=step == 0)
        assert action_a == action_b and np.shape(action_a) == ()
        obs, *_ = env.step(action_a)
    torch.testing.assert_close(state_a, state_b)
    batch = np.stack([Recall().reset(seed=s)[0] for s in range(3)])
    actions, _ = loaded.predict(batch, None, np.ones(3, bool))
    assert actions.shape == (3,)
    with pytest.raises(CheckpointError, match="without training state"):
        loaded.learn()


def test_resume_from_python(tmp_path):
    model = recurrl.PPO({"id": Recall, "num_envs": 4}, **small(tmp_path), quiet=True).learn(128)
    run_dir = model.run_dir
    with pytest.raises(ConfigError, match=r"ppo.total_steps: .* already trained 128"):
        recurrl.PPO.load(run_dir, env=Recall).learn()
    resumed = recurrl.PPO.load(run_dir, env=Recall, quiet=True)
    action, _ = resumed.predict(np.zeros(2, np.float32), None, True)  # before learning
    assert action in (0, 1)
    resumed.learn(256)
    assert resumed.result.global_step == 256
    assert [m["global_step"] for m in read_metrics(run_dir)] == [64, 128, 192, 256]
    resumed.learn(320)  # the same object goes on from its latest.pt
    assert read_metrics(run_dir)[-1]["global_step"] == 320


def test_an_env_from_a_function_must_be_passed_again(tmp_path):
    def make():
        return Recall(length=2)

    model = recurrl.PPO({"id": make, "num_envs": 4}, **small(tmp_path), quiet=True).learn(64)
    assert model.config.env.id.endswith(
        "test_an_env_from_a_function_must_be_passed_again.<locals>.make>"
    )
    with pytest.raises(ConfigError, match=r"cannot be made again .* pass it again"):
        recurrl.PPO.load(model.run_dir).learn(128)
    with pytest.raises(ConfigError, match=r"env.id: cannot change when resuming"):
        recurrl.PPO.load(model.run_dir, env=Recall)
    resumed = recurrl.PPO.load(model.run_dir, env=make, quiet=True).learn(128)
    assert resumed.result.global_step == 128


def test_the_readme_script_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Train on your own env") :]
    module, script = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    assert "class MyEnv" in module and "recurrl.PPO(MyEnv" in script
    assert len(script.strip().splitlines()) <= 16
    (tmp_path / "mymodule.py").write_text(module)
    (tmp_path / "script.py").write_text(script.replace("50_000", "512"))  # the same, shorter
    done = subprocess.run(
        [sys.executable, "script.py"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "recurrl: run folder" in done.stdout
