"""Device-resident vector envs: the batched tasks of :mod:`envs.core` as torch tensor ops.

:class:`TorchTaskVectorEnv` mirrors :class:`envs.core.TaskVectorEnv`: ``N`` copies of one task
held as tensors on ``device`` and advanced together, SAME_STEP autoreset, the same spaces. It
takes actions as tensors on ``device`` (numpy arrays are converted) and returns tensors there:

- ``reset(seed=None, options=None) -> (obs [N, ...], {})``;
- ``step(actions) -> (obs [N, ...], reward [N] float32, terminated [N] bool,
  truncated [N] bool, info)`` where ``info`` always holds the dense ``"final_obs"`` (shaped like
  ``obs``; rows where nothing ended hold that step's ordinary observation) and ``"_final_obs"``
  ([N] bool, which rows ended). Observations have the observation space's dtype: float32, and
  uint8 for MemoryGrid's images. Actions: int64 ``[N]`` for Discrete, float32 ``[N, d]`` for Box.

``step`` never synchronises with the host: no ``.item()``, no Python branch on a tensor value,
no boolean-mask indexing (every row is computed and ``torch.where`` picks), and the state tensors
are updated in place, so it can be captured in a CUDA graph.

Randomness is the same counter-based SplitMix64 as :mod:`envs.core`, written with int64 tensor
ops (int64 products wrap like uint64 ones; logical right shifts are arithmetic shifts masked), so
copy ``i`` of a torch env seeded ``s`` and copy ``i`` of the numpy vector env seeded ``s`` play
the same episodes for the same actions. ``get_state()`` returns exactly what the numpy env's
``get_state()`` returns (numpy arrays and plain data, on the host), so the state of one loads into
the other.

Torch, numpy and gymnasium only: this package never imports ``recurrl``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from torch import Tensor

from ..core import EPISODE_STREAM, Task, _check_reset_mask, _entropy_keys, seed_keys

__all__ = [
    "EPISODE_STREAM",
    "TorchTaskVectorEnv",
    "below",
    "draw",
    "mix64",
    "signed",
    "srl",
    "uniform",
]

_MASK64 = (1 << 64) - 1


def signed(value: int) -> int:
    """The int64 with the same 64 low bits as the integer ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = signed(0xBF58476D1CE4E5B9)
_MIX2 = signed(0x94D049BB133111EB)


def srl(x: Tensor, shift: int) -> Tensor:
    """Logical right shift of int64 ``x`` by a constant ``0 < shift < 64`` (as on uint64)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def mix64(x: Tensor) -> Tensor:
    """SplitMix64 finaliser on int64 tensors (bit for bit :func:`envs.core.mix64`)."""
    z = x ^ srl(x, 30)
    z = z * _MIX1
    z = z ^ srl(z, 27)
    z = z * _MIX2
    return z ^ srl(z, 31)


def draw(episode_keys: Tensor, counter: int | Tensor) -> Tensor:
    """64 random bits (int64) per copy: :func:`envs.core.draw` on tensors."""
    if isinstance(counter, Tensor):
        offset = counter.to(torch.int64) * signed(_GOLDEN)
    else:
        offset = signed(counter * _GOLDEN)
    return mix64(episode_keys + offset)


def uniform(bits: Tensor) -> Tensor:
    """float64 in ``[0, 1)`` from random bits (the top 53), as :func:`envs.core.uniform`."""
    return srl(bits, 11).to(torch.float64) * (1.0 / (1 << 53))


def below(bits: Tensor, n: int) -> Tensor:
    """int64 in ``[0, n)`` from random bits, as :func:`envs.core.below`."""
    return srl(srl(bits, 32) * n, 32)


def to_int64(array: np.ndarray, device: torch.device) -> Tensor:
    """A uint64 / int64 numpy array as an int64 tensor with the same bits."""
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint64:
        array = array.view(np.int64)
    return torch.from_numpy(array.astype(np.int64, copy=True)).to(device)


def to_uint64(tensor: Tensor) -> np.ndarray:
    """An int64 tensor as a uint64 numpy array with the same bits (on the host)."""
    return tensor.detach().cpu().numpy().astype(np.int64, copy=True).view(np.uint64)


def as_mask(mask: Any, num_envs: int) -> np.ndarray:
    """``options["reset_mask"]`` (numpy or torch bool [N]) as a numpy bool array."""
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    return _check_reset_mask(mask, num_envs)


class TorchTaskVectorEnv(gym.vector.VectorEnv):
    """``N`` copies of a task as tensors on ``device`` (see the module docstring).

    Subclasses set ``task_class`` (the numpy :class:`~envs.core.Task`: its constructor checks
    the arguments and gives the spaces, with the same errors), ``state_tensors`` (name -> numpy
    dtype of the per-copy tensors the numpy task's ``get_state`` saves) and implement
    :meth:`new_episodes`, :meth:`observe` and :meth:`task_step`.

    Args:
        num_envs: ``N``.
        device: where the tensors live (the policy's device).
        max_episode_steps: optional time limit (copies reaching it are truncated).
        **kwargs: the task's difficulty knobs.
    """

    task_class: type[Task]
    state_tensors: dict[str, Any] = {}
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.spec_task = self.task_class(num_envs=1, **kwargs)  # checks kwargs, gives spaces
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_episode_steps = max_episode_steps
        self.can_truncate = max_episode_steps is not None
        self.single_observation_space = self.spec_task.observation_space
        self.single_action_space = self.spec_task.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        zeros = {"dtype": torch.int64, "device": self.device}
        self.keys = torch.zeros(num_envs, **zeros)
        self.episodes = torch.zeros(num_envs, **zeros)
        self.episode_keys = torch.zeros(num_envs, **zeros)
        self.elapsed = torch.zeros(num_envs, **zeros)
        self._keyed = False

    # --- what a task implements ---------------------------------------------------------------

    def new_episodes(self, mask: Tensor) -> None:
        """Draw the per-episode quantities of the copies where ``mask`` ([N] bool) is True
        (their keys are set), in place, without touching the other rows."""
        raise NotImplementedError

    def observe(self) -> Tensor:
        """Current observations of every copy: a new tensor ``[N, *obs_shape]``."""
        raise NotImplementedError

    def task_step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Advance every copy one step (``elapsed`` too), in place.

        Returns ``(obs, reward float32, terminated bool, truncated bool)``, new tensors.
        """
        raise NotImplementedError

    # --- the Gymnasium API --------------------------------------------------------------------

    def start(self, mask: Tensor, keys: Tensor | None = None) -> None:
        """Begin a new episode in the copies where ``mask``; with ``keys``, re-key them."""
        if keys is None:
            self.episodes.add_(mask.to(torch.int64))
        else:
            self.keys.copy_(torch.where(mask, keys, self.keys))
            self.episodes.masked_fill_(mask, 0)
        fresh = mix64(self.keys + self.episodes * signed(_GOLDEN))
        self.episode_keys.copy_(torch.where(mask, fresh, self.episode_keys))
        self.elapsed.masked_fill_(mask, 0)
        self.new_episodes(mask)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        """Reset all copies, or those in ``options["reset_mask"]`` ([N] bool, numpy or torch).

        ``seed=s`` seeds copy ``i`` with ``s + i``; a list gives one seed per copy (as the numpy
        env). Keys are computed on the host: a reset is not meant for a CUDA graph.
        """
        rows = np.ones(self.num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:
            rows = as_mask(options["reset_mask"], self.num_envs)
        if isinstance(seed, list | tuple | np.ndarray):
            if len(seed) != self.num_envs:
                raise ValueError(f"got {len(seed)} seeds for num_envs={self.num_envs}")
            super().reset(seed=None)
            keys = seed_keys(np.asarray(seed, dtype=object))
        else:
            super().reset(seed=seed)
            keys = None if seed is None else seed_keys(int(seed) + np.arange(self.num_envs))
        if keys is None and not self._keyed:
            keys = _entropy_keys(self.np_random, self.num_envs)
        self._keyed = True
        mask = torch.from_numpy(rows.copy()).to(self.device)
        self.start(mask, None if keys is None else to_int64(keys, self.device))
        return self.observe(), {}

    def step(self, actions: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        actions = self.as_actions(actions)
        obs, reward, terminated, truncated = self.task_step(actions)
        if self.max_episode_steps is not None:
            truncated = truncated | (self.elapsed >= self.max_episode_steps)
        done = terminated | truncated
        self.start(done)
        fresh = self.observe()
        shape = (self.num_envs,) + (1,) * (obs.dim() - 1)
        next_obs = torch.where(done.reshape(shape), fresh, obs)
        return next_obs, reward, terminated, truncated, {"final_obs": obs, "_final_obs": done}

    def as_actions(self, actions: Any) -> Tensor:
        """``actions`` as a tensor on the device: int64 for Discrete, float32 for Box."""
        space = self.single_action_space
        dtype = torch.int64 if isinstance(space, gym.spaces.Discrete) else torch.float32
        if isinstance(actions, Tensor):
            return actions.to(device=self.device, dtype=dtype)
        return torch.as_tensor(np.asarray(actions), device=self.device).to(dtype)

    # --- exact resume -------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """What the numpy env's ``get_state`` returns (numpy arrays and plain data, host)."""
        task = {
            "keys": to_uint64(self.keys),
            "episodes": to_uint64(self.episodes),
            "episode_keys": to_uint64(self.episode_keys),
            "elapsed": self.elapsed.cpu().numpy().copy(),
        }
        for name, dtype in self.state_tensors.items():
            tensor = getattr(self, name)
            if np.dtype(dtype) == np.uint64:
                task[name] = to_uint64(tensor)
            else:
                task[name] = tensor.cpu().numpy().astype(dtype, copy=True)
        rng = self._np_random  # None until first used: keep it that way, do not draw a seed
        return {
            "task": task,
            "keyed": self._keyed,
            "np_random": None if rng is None else rng.bit_generator.state,
            "np_random_seed": self._np_random_seed,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state` (this env's or the numpy env's, same arguments)."""
        task = state["task"]
        for name in ("keys", "episodes", "episode_keys", "elapsed", *self.state_tensors):
            current = getattr(self, name)
            value = np.asarray(task[name])
            if value.shape != tuple(current.shape):
                raise ValueError(
                    f"{type(self).__name__}.set_state: {name} has shape {value.shape}, "
                    f"this env's is {tuple(current.shape)}"
                )
            if current.dtype == torch.int64:
                current.copy_(to_int64(value, self.device))
            else:
                current.copy_(torch.as_tensor(value, device=self.device, dtype=current.dtype))
        self._keyed = bool(state["keyed"])
        self._np_random = _generator(state["np_random"])
        self._np_random_seed = state["np_random_seed"]


def _generator(state: dict[str, Any] | None) -> np.random.Generator | None:
    if state is None:
        return None
    generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
    generator.bit_generator.state = state
    return generator
