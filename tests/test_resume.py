"""Checkpoints and resume: exact for a stateful vector env, restarted envs otherwise, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from recurrl.algo.ppo import learning_rate_at
from recurrl.app.cli import main
from recurrl.config import ConfigError, PPOConfig, load_config
from recurrl.run.checkpoints import CheckpointError, load_checkpoint, write_checkpoint
from recurrl.run.resume import StatefulVectorEnv, resume_checkpoint, resume_config
from recurrl.run.run_dir import read_metrics
from recurrl.run.train import Trainer, train
from tests.conftest import CUE_OVERRIDES, interrupt_after, strip_timing


class CueVectorEnv(gym.vector.VectorEnv):
    """A natively batched memory task with saveable state (the ``get_state`` protocol).

    A cue in {-1, +1} is shown at an episode's first step (noise after it); after ``delay``
    steps the action must name it (reward 1; 0.1 for naming it earlier). Episodes end by
    termination, or by truncation at random (so both GAE cases are exercised). SAME_STEP
    autoreset. With ``nested`` the observation is a ``Dict`` of the cue and the noise.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, delay: int = 3, nested: bool = False) -> None:
        self.num_envs, self.delay, self.nested = num_envs, delay, nested
        self.single_observation_space = gym.spaces.Box(-5.0, 5.0, (2,), np.float32)
        if nested:
            part = gym.spaces.Box(-5.0, 5.0, (1,), np.float32)
            self.single_observation_space = gym.spaces.Dict({"cue": part, "noise": part})
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.cue = np.zeros(num_envs, dtype=np.int64)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = self.np_random.integers(0, 2, self.num_envs)
        self.elapsed[:] = 0
        return self._observe(), {}

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, 2), dtype=np.float32)
        obs[:, 0] = np.where(self.elapsed == 0, 2.0 * self.cue - 1.0, 0.0)
        obs[:, 1] = self.np_random.normal(size=self.num_envs) * 0.1
        return {"cue": obs[:, :1], "noise": obs[:, 1:]} if self.nested else obs

    def step(self, actions):
        self.elapsed += 1
        terminated = self.elapsed > self.delay
        truncated = ~terminated & (self.np_random.random(self.num_envs) < 0.05)
        correct = (np.asarray(actions) == self.cue).astype(np.float64)
        reward = np.where(terminated, correct, 0.1 * correct)  # a step reward for prev_reward
        final = self._observe()
        done = terminated | truncated
        if not done.any():
            return final, reward, terminated, truncated, {}
        self.cue[done] = self.np_random.integers(0, 2, int(done.sum()))
        self.elapsed[done] = 0
        obs = self._observe()
        return obs, reward, terminated, truncated, {"final_obs": final, "_final_obs": done}

    def get_state(self) -> dict:
        return {
            "cue": self.cue.copy(),
            "elapsed": self.elapsed.copy(),
            "rng": self.np_random.bit_generator.state,
        }

    def set_state(self, state: dict) -> None:
        self.cue, self.elapsed = state["cue"].copy(), state["elapsed"].copy()
        self.np_random.bit_generator.state = state["rng"]


gym.register("recurrl_test/Cue-v0", vector_entry_point=CueVectorEnv)


def test_native_env_implements_the_protocol():
    assert isinstance(CueVectorEnv(2), StatefulVectorEnv)
    assert not isinstance(gym.make_vec("CartPole-v1", num_envs=2), StatefulVectorEnv)


@pytest.mark.parametrize("nested", [False, True], ids=["box", "dict"])
def test_interrupted_and_resumed_run_equals_uninterrupted(nested, tmp_path, monkeypatch, capsys):
    overrides = CUE_OVERRIDES + [f"env.kwargs={{nested: {str(nested).lower()}}}"]
    train(load_config(None, overrides + [f"run.dir={tmp_path / 'a'}"]), quiet=True)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)
        stopped = train(load_config(None, overrides + [f"run.dir={tmp_path / 'b'}"]), True)
    assert stopped.interrupted == signal.SIGTERM and stopped.global_step == 384
    assert f"recurrl train --resume {tmp_path / 'b'}" in capsys.readouterr().err
    assert not (tmp_path / "b" / "checkpoints" / "final.pt").exists()
    assert main(["train", "--resume", str(tmp_path / "b"), "--quiet", "--eval-episodes=0"]) == 0

    a, b = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    final_a, final_b = load_checkpoint(a / "final.pt"), load_checkpoint(b / "final.pt")
    for key, value in final_a["policy"].items():
        assert torch.equal(value, final_b["policy"][key]), key
    assert final_a["optimizer"]["state"][0]["exp_avg"].equal(
        final_b["optimizer"]["state"][0]["exp_avg"]
    )
    metrics_a, metrics_b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [m["global_step"] for m in metrics_b] == [128 * i for i in range(1, 7)]
    assert strip_timing(metrics_a) == strip_timing(metrics_b)
    evaluated = [m for m in metrics_b if "eval_return_mean" in m]
    assert [m["global_step"] for m in evaluated] == [256, 512, 768]
    assert "eval_stochastic_return_mean" in evaluated[0]
    assert sorted(p.name for p in b.glob("step-*.pt")) == [
        "step-000000000512.pt",
        "step-000000000768.pt",
    ]
    best = load_checkpoint(b / "best.pt")["training"]["best_eval_return"]
    assert best == max(m["eval_return_mean"] for m in evaluated)


def test_resume_restarts_envs_without_state_and_continues(
    tiny_overrides, tmp_path, monkeypatch, capsys
):
    # SyncVectorEnv has no get_state (CartPoleNoVelocity's native env has: sync is asked for).
    overrides = [*tiny_overrides, "env.vectorization=sync"]
    config = load_config("experiments/quickstart.yaml", overrides)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2, signal.SIGINT)
        assert train(config, quiet=True).interrupted == signal.SIGINT
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet", "--eval-episodes=0"]) == 0
    assert "fresh reset" in capsys.readouterr().err
    assert [m["global_step"] for m in read_metrics(run_dir)] == [128, 256, 384, 512]
    assert load_checkpoint(run_dir / "checkpoints" / "final.pt")["global_step"] == 512
    # Finished: resuming again is refused until total_steps grows.
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "already trained 512" in capsys.readouterr().err
    more = ["ppo.total_steps=640", "ppo.learning_rate=1e-4", "--quiet"]
    assert main(["train", "--resume", str(run_dir), *more]) == 0


def test_resume_refuses_changed_env_policy_and_spaces(tiny_overrides, tmp_path, capsys):
    run_dir = train(load_config("experiments/quickstart.yaml", tiny_overrides), quiet=True).run_dir
    _, payload = resume_checkpoint(run_dir)
    with pytest.raises(ConfigError, match="policy.hidden_size: cannot change when resuming"):
        resume_config(run_dir, payload, ["policy.hidden_size=32", "ppo.total_steps=1024"])
    with pytest.raises(ConfigError, match="env.num_envs"):
        resume_config(run_dir, payload, ["env.num_envs=2", "ppo.total_steps=1024"])
    payload["observation_space"]["shape"] = [3]
    payload["observation_space"]["low"] = [-1.0] * 3
    payload["observation_space"]["high"] = [1.0] * 3
    config = resume_config(run_dir, payload, ["ppo.total_steps=1024", "ppo.learning_rate=1e-4"])
    with pytest.raises(CheckpointError, match="observation space .* checkpoint was trained on"):
        Trainer(config, quiet=True, resume=payload)
    write_checkpoint(tmp_path / "other.pt", payload)
    assert main(["eval", str(tmp_path / "other.pt")]) == 2
    assert "checkpoint was trained on Box(-1.0, 1.0, (3,)" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="no checkpoints/latest.pt"):
        resume_checkpoint(tmp_path / "nowhere")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "latest.pt", {"format": "recurrl-checkpoint", "step": 1})

    def dies_mid_write(payload, target):
        with open(target, "wb") as file:
            file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, {"format": "recurrl-checkpoint", "step": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_sigterm_leaves_a_loadable_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "recurrl", "train", "experiments/quickstart.yaml"]
    command += [f"run.dir={run_dir}", "env.num_envs=4", "ppo.rollout_len=32", "ppo.bptt_len=8"]
    command += ["ppo.total_steps=10000000", "ppo.update_epochs=1", "policy.hidden_size=16"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and "\n" in metrics.read_text()):  # one update logged
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received" in err and f"recurrl train --resume {run_dir}" in err
    assert "Traceback" not in err
    payload = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert payload["global_step"] > 0 and payload["training"]["update"] >= 1
    assert payload["global_step"] == read_metrics(run_dir)[-1]["global_step"]


# --- the learning-rate schedule across a resume ---------------------------------------------


def test_learning_rate_line_starts_where_it_is_told():
    config = PPOConfig(learning_rate=1e-3, total_steps=1000)
    for step in (0, 128, 999, 1000, 1200):  # a new run: the line from (0, learning_rate)
        assert learning_rate_at(config, step) == 1e-3 * max(0.0, 1.0 - step / 1000)
    assert learning_rate_at(config, 400, (400, 2e-4)) == 2e-4
    assert learning_rate_at(config, 700, (400, 2e-4)) == pytest.approx(1e-4, rel=1e-12)
    assert learning_rate_at(config, 1000, (400, 2e-4)) == 0.0
    assert (
        learning_rate_at(PPOConfig(learning_rate=3e-4, anneal_lr=False), 700, (400, 2e-4)) == 3e-4
    )


def test_resume_with_more_steps_anneals_on_from_the_rate_it_had(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    overrides = [*CUE_OVERRIDES, "eval.every=0", f"run.dir={run_dir}"]
    rate = load_config(None, overrides).ppo.learning_rate
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)
        assert train(load_config(None, overrides), quiet=True).global_step == 384  # of 768
    resume = ["train", "--resume", str(run_dir), "--quiet", "--eval-episodes=0"]
    assert main([*resume, "ppo.total_steps=1536"]) == 0
    rates = [m["learning_rate"] for m in read_metrics(run_dir)]
    assert rates[:3] == [rate * (1 - step / 768) for step in (0, 128, 256)]
    # From the rate it had at step 384 (half) to 0 at the new end, never back up.
    expected = [rate / 2 * (1 - (step - 384) / (1536 - 384)) for step in range(384, 1536, 128)]
    assert rates[3:] == pytest.approx(expected, rel=1e-12)
    assert rates == sorted(rates, reverse=True)
    # A finished run's rate is 0: more steps alone would train nothing, so that is refused...
    with pytest.raises(ConfigError, match="pass ppo.learning_rate=X too"):
        resume_config(run_dir, load_checkpoint(run_dir / "checkpoints" / "final.pt"),
                      ["ppo.total_steps=1792"])  # fmt: skip
    assert main([*resume, "ppo.total_steps=1792"]) == 2
    # ... and a new learning rate starts the line again from there.
    assert main([*resume, "ppo.total_steps=1792", "ppo.learning_rate=1e-4"]) == 0
    assert [m["learning_rate"] for m in read_metrics(run_dir)[-2:]] == [1e-4, 5e-5]
    resumed = load_checkpoint(run_dir / "checkpoints" / "final.pt")["training"]
    assert tuple(resumed["anneal_from"]) == (1536, 1e-4)
