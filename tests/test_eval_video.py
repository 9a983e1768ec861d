"""``recurrl eval --video``: one episode written as a GIF, clear errors otherwise."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest

from recurrl.app.cli import main
from recurrl.app.video import VideoError, write_video
from recurrl.config import load_config, to_dict
from recurrl.policy import ActorCritic
from recurrl.run.checkpoints import save_checkpoint


class Corridor(gym.Env):
    """Walk right for 6 steps; renders a 16x24 picture of the position."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.position += 1
        obs = np.array([self.position / 6], dtype=np.float32)
        return obs, float(action), self.position >= 6, False, {}

    def render(self):
        frame = np.zeros((16, 24, 3), dtype=np.uint8)
        frame[:, 4 * self.position : 4 * self.position + 4] = 255
        return frame


gym.register("recurrl_test/Corridor-v0", entry_point=Corridor)


class BlindCorridor(Corridor):
    """The same walk, drawing nothing."""

    metadata = {"render_modes": []}


gym.register("recurrl_test/BlindCorridor-v0", entry_point=BlindCorridor)


def checkpoint_for(env_id, tmp_path):
    config = load_config(None, [f"env.id={env_id}", "policy.hidden_size=8"])
    env = gym.make(env_id)
    policy = ActorCritic(env.observation_space, env.action_space, config.policy)
    return save_checkpoint(tmp_path / "checkpoints" / "final.pt", policy, to_dict(config), 0)


def test_eval_writes_a_gif_of_one_episode(tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image

    checkpoint_for("recurrl_test/Corridor-v0", tmp_path)
    video = tmp_path / "episode.gif"
    code = main(["eval", str(tmp_path), "--episodes", "2", "--video", str(video)])
    assert code == 0
    assert f"video: {video} (7 frames" in capsys.readouterr().out
    with Image.open(video) as gif:
        assert gif.n_frames == 7 and gif.size == (24, 16)


def test_video_errors_name_the_problem(tmp_path, monkeypatch, capsys):
    checkpoint_for("recurrl_test/BlindCorridor-v0", tmp_path)  # renders nothing
    assert main(["eval", str(tmp_path), "--video", str(tmp_path / "x.gif")]) == 2
    assert "cannot render frames" in capsys.readouterr().err
    frames = [np.zeros((4, 4, 3), dtype=np.uint8)] * 2
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    with pytest.raises(VideoError, match="needs Pillow: pip install pillow"):
        write_video(frames, tmp_path / "x.gif")
    monkeypatch.setitem(sys.modules, "imageio", None)
    with pytest.raises(
        VideoError, match=r"needs imageio with ffmpeg: pip install 'imageio\[ffmpeg\]'"
    ):
        write_video(frames, tmp_path / "x.mp4")


def test_eval_video_of_a_trained_tmaze_policy(tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image

    run_dir = tmp_path / "run"
    train = ["train", "env.id=recurrl/TMaze-v0", "env.kwargs.length=4", f"run.dir={run_dir}"]
    train += ["env.num_envs=4", "ppo.total_steps=256", "ppo.rollout_len=32", "ppo.bptt_len=8"]
    train += ["policy.hidden_size=8", "policy.encoder_sizes=[8]", "device=cpu", "--quiet"]
    assert main([*train, "--eval-episodes=0"]) == 0
    capsys.readouterr()
    video = tmp_path / "tmaze.gif"
    args = ["eval", str(run_dir), "--episodes", "2", "--deterministic", "--video", str(video)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"video: {video} (" in out
    frames = int(out.split(f"video: {video} (")[1].split(" frames")[0])
    with Image.open(video) as gif:
        # Pillow merges identical consecutive frames (a policy bumping into a wall).
        assert 2 <= gif.n_frames <= frames and gif.size == (16 * 5, 48)
