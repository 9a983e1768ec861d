"""Record one episode of a policy as a video (``recurrl eval --video PATH``).

The env is made with ``render_mode="rgb_array"``. A ``.gif`` is written with Pillow; other
formats (``.mp4``, ...) with imageio (``pip install 'imageio[ffmpeg]'``). Both are optional and
imported only here.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from recurrl.algo.make_env import resolve_env_id
from recurrl.config import EnvConfig
from recurrl.policy import ActorCritic


class VideoError(RuntimeError):
    """The env cannot render frames, or no library can write the requested file."""


def make_render_env(env_config: EnvConfig) -> gym.Env:
    """One env that renders ``rgb_array`` frames, or a VideoError saying why not."""
    env_id = resolve_env_id(env_config.id)
    env = gym.make(env_id, **env_config.kwargs)
    modes = env.metadata.get("render_modes", [])
    env.close()
    if "rgb_array" not in modes:
        raise VideoError(
            f"{env_id} cannot render frames: its render modes are {modes or 'none'}, "
            f"--video needs 'rgb_array'"
        )
    return gym.make(env_id, render_mode="rgb_array", **env_config.kwargs)


def record_episode(
    policy: ActorCritic,
    env_config: EnvConfig,
    deterministic: bool = True,
    seed: int = 0,
    max_steps: int = 10_000,
) -> tuple[list[np.ndarray], float, int]:
    """Frames ``[H, W, 3]`` of one episode (state carried, reset at its start), its return and
    the env's frame rate (``metadata["render_fps"]``, else 30)."""
    env = make_render_env(env_config)
    try:
        obs, _ = env.reset(seed=seed)
        frames, total, state, episode_start = [_frame(env)], 0.0, None, True
        for _ in range(max_steps):
            action, state = policy.act(obs, state, episode_start, deterministic=deterministic)
            obs, reward, terminated, truncated, _ = env.step(action)
            frames.append(_frame(env))
            total += float(reward)
            episode_start = False
            if terminated or truncated:
                break
        fps = int(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    return frames, total, fps


def _frame(env: gym.Env) -> np.ndarray:
    try:
        frame = env.render()
    except gym.error.DependencyNotInstalled as error:
        raise VideoError(f"{env.spec.id} cannot render: {error}") from None
    return np.asarray(frame, dtype=np.uint8)


def write_video(frames: list[np.ndarray], path: str | Path, fps: int = 30) -> Path:
    """Write ``frames`` to ``path``: GIF with Pillow, other formats with imageio."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        try:
            from PIL import Image
        except ImportError:
            raise VideoError(
                f"writing {path} needs Pillow: pip install pillow (or pip install 'recurrl[video]')"
            ) from None
        images = [Image.fromarray(frame) for frame in frames]
        duration = max(1, round(1000 / fps))
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
        return path
    try:
        import imageio
    except ImportError:
        raise VideoError(
            f"writing {path} needs imageio with ffmpeg: pip install 'imageio[ffmpeg]' (or pip "
            f"install 'recurrl[video]'); a .gif path needs only Pillow"
        ) from None
    try:
        imageio.mimsave(path, frames, fps=fps)
    except Exception as error:  # e.g. no ffmpeg backend for .mp4
        raise VideoError(f"imageio cannot write {path}: {error}") from None
    return path
