"""Shared machinery of the natively batched memory tasks.

A :class:`Task` holds the state of ``N`` copies of one environment as arrays and advances all of
them with array operations. Two thin Gymnasium classes expose a task:

- :class:`TaskVectorEnv`, a ``gymnasium.vector.VectorEnv`` over ``N`` copies, registered as the
  id's ``vector_entry_point`` (``gymnasium.make_vec(id, num_envs=N)``);
- :class:`TaskEnv`, a ``gymnasium.Env`` over one copy (``gymnasium.make(id)``,
  ``gymnasium.utils.env_checker.check_env``).

Both run the same task code; the single env is the task with ``N = 1``.

Autoreset (vector env): ``AutoresetMode.SAME_STEP``. When copy ``i`` ends at a step
(``terminated[i] or truncated[i]``), the observation returned for it is already the first
observation of its next episode, ``info["final_obs"][i]`` holds the last observation of the
ended episode and ``info["_final_obs"][i]`` is True. ``info["final_obs"]`` is a dense array
shaped like the observations (rows where ``_final_obs`` is False hold that step's ordinary
observation and mean nothing); Gymnasium's ``SyncVectorEnv`` uses an object array instead, and
indexing ``info["final_obs"][i]`` reads the same from both. No step is spent on resets.

Memory ground truth: a task whose :meth:`Task.memory` says what the agent must remember puts it
in the ``info`` of every ``reset`` and ``step``: ``info["memory_target"]``, the hidden quantity as
a class id (int64, ``0 <= target < Task.memory_classes``), and ``info["memory_age"]``, how many
steps ago it was last shown (int64; 0 when the observation returned with it shows it). Both are
``[N]`` arrays from the vector env and Python ints from the single env. They always describe the
observation returned with them, the one the policy reads next: for a copy whose episode ended at
a step, the first observation of its next episode (age 0 of the new target), not
``info["final_obs"]``. So a state probe pairs the recurrent state after reading an observation
with that observation's target and age (``recurrl probe``'s state probe does). TMaze, CueRecall,
RepeatPrevious, SequenceRecall and PointRecall provide them (each env's docstring says what the
target is); MemoryGrid does not (its cue stays in view for as long as the walk keeps it there,
so its age would need state of its own), nor Bandit (its best arm is never shown). Such envs
return an empty ``info`` from ``reset`` and from steps without an ended episode. The torch twins
(``envs.device``) do not return them.

Randomness is counter-based (SplitMix64), so no Python loop over copies is needed and a copy draws
the same numbers alone or in a batch of 4096. Copy ``i`` has a 64-bit key derived from its seed;
episode ``e`` of the copy has the key ``mix(key + e * G)``; draw ``j`` within that episode is
``mix(episode_key + j * G)``. ``TaskVectorEnv.reset(seed=s)`` keys copy ``i`` with seed ``s + i``,
exactly as ``TaskEnv.reset(seed=s + i)`` keys the single env, so copy ``i`` of the vector env and
a single env seeded ``s + i`` produce identical trajectories, episode after episode, for the same
actions. Unseeded first resets take their keys from ``np_random``.

Exact resume: ``get_state()`` on either class returns the whole state (every task array, the
copies' keys and episode counters, ``elapsed``, whether the copies are keyed, and the
``np_random`` stream) as numpy arrays and plain data; ``set_state`` on a new env made with the
same arguments continues exactly where the first left off (``recurrl``'s ``StatefulVectorEnv``).

Rendering: a task that can draw itself implements :meth:`Task.render`, and its single env lists
``"rgb_array"`` in ``metadata["render_modes"]``; ``gymnasium.make(id, render_mode="rgb_array")``
then returns ``[H, W, 3]`` uint8 pictures from ``render()``. Drawing reads the task's arrays
only: it draws no random numbers and changes nothing.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64 increment (2^64 / golden ratio)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0x5EED_0F_2EC022E1)  # keeps keys of seed s apart from raw counters
EPISODE_STREAM = 1 << 62
"""Counter offset for per-episode draws, far from per-step counters ``0, 1, 2, ...``."""


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of a ``uint64`` array (a bijection that scrambles every bit)."""
    z = x ^ (x >> np.uint64(30))
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def seed_keys(seeds: int | np.ndarray) -> np.ndarray:
    """Copy keys ``[N]`` (uint64) for integer seeds ``[N]`` (or one seed)."""
    seeds = np.atleast_1d(np.asarray(seeds, dtype=object) % (1 << 64)).astype(np.uint64)
    return mix64(seeds ^ _SEED_SALT)


def draw(episode_keys: np.ndarray, counter: int | np.ndarray) -> np.ndarray:
    """64 random bits per copy: the ``counter``-th draw of each copy's current episode.

    Args:
        episode_keys: ``[N]`` uint64 keys of the copies' current episodes.
        counter: one counter for all copies, or ``[N]`` integer counters (e.g. elapsed steps).
    """
    if isinstance(counter, np.ndarray):
        offset = counter.astype(np.uint64) * _GOLDEN
    else:
        offset = np.uint64((counter * int(_GOLDEN)) & _MASK64)
    return mix64(episode_keys + offset)


def uniform(bits: np.ndarray) -> np.ndarray:
    """Floats in ``[0, 1)`` from random bits (the top 53 bits, as NumPy does)."""
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def below(bits: np.ndarray, n: int) -> np.ndarray:
    """Integers in ``[0, n)`` (int64) from random bits (multiply-shift on the top 32 bits)."""
    return (((bits >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)).astype(np.int64)


class Task:
    """``N`` copies of one environment, advanced together with array operations.

    Subclasses set ``observation_space`` and ``action_space`` (of one copy) and implement
    :meth:`new_episodes`, :meth:`observe` and :meth:`step`. ``self.episode_keys[i]`` feeds
    :func:`draw` for copy ``i``'s randomness; ``self.elapsed[i]`` counts its steps.

    Args:
        num_envs: ``N``, the number of copies.
    """

    observation_space: gym.Space
    action_space: gym.Space
    horizon: int
    """Longest possible episode (steps); every episode terminates by then."""
    state_arrays: tuple[str, ...] = ()
    """Names of the subclass's per-copy arrays (``[N, ...]``) that :meth:`get_state` saves."""
    memory_classes: int = 0
    """How many values :meth:`memory`'s target takes (0 when the task has no memory target)."""

    def __init__(self, num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.keys = np.zeros(num_envs, dtype=np.uint64)
        self.episodes = np.zeros(num_envs, dtype=np.uint64)
        self.episode_keys = np.zeros(num_envs, dtype=np.uint64)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)

    def start(self, rows: np.ndarray, keys: np.ndarray | None = None) -> None:
        """Begin a new episode in copies ``rows``; with ``keys``, re-key them (episode 0)."""
        if keys is None:
            self.episodes[rows] += np.uint64(1)
        else:
            self.keys[rows] = keys
            self.episodes[rows] = 0
        self.episode_keys[rows] = mix64(self.keys[rows] + self.episodes[rows] * _GOLDEN)
        self.elapsed[rows] = 0
        self.new_episodes(rows)

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of every per-copy array: keys, episode counters, ``elapsed``, task arrays."""
        names = ("keys", "episodes", "episode_keys", "elapsed", *self.state_arrays)
        return {name: getattr(self, name).copy() for name in names}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`get_state` (same ``num_envs`` and difficulty, checked by shape)."""
        for name in ("keys", "episodes", "episode_keys", "elapsed", *self.state_arrays):
            current = getattr(self, name)
            value = np.asarray(state[name], dtype=current.dtype)
            if value.shape != current.shape:
                raise ValueError(
                    f"{type(self).__name__}.set_state: {name} has shape {value.shape}, "
                    f"this env's is {current.shape}"
                )
            setattr(self, name, value.copy())

    def new_episodes(self, rows: np.ndarray) -> None:
        """Draw the per-episode quantities of copies ``rows`` (their keys are set)."""
        raise NotImplementedError

    def observe(self, rows: np.ndarray) -> np.ndarray:
        """Current observations of copies ``rows``: a new array ``[len(rows), *obs_shape]``."""
        raise NotImplementedError

    def memory(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """What copies ``rows`` must remember now, or None for a task without such a quantity.

        Describes the current observations (what :meth:`observe` returns, or :meth:`step` just
        returned): ``(target [len(rows)] int64 in [0, memory_classes), age [len(rows)] int64)``,
        the hidden quantity and the steps since it was last shown (0: shown now). Two new
        arrays, read from the task's arrays without drawing anything that changes them.
        """
        return None

    def render(self, row: int) -> np.ndarray:
        """A picture of copy ``row``: ``[H, W, 3]`` uint8, the same size at every step."""
        raise NotImplementedError(f"{type(self).__name__} draws no pictures")

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        """Advance every copy by one step (and ``elapsed`` by one).

        Args:
            actions: ``[N, *action_shape]`` valid actions (not checked, for speed).

        Returns:
            ``(obs [N, *obs_shape], reward [N] float64, terminated [N] bool,
            truncated [N] bool)``, all newly allocated.
        """
        raise NotImplementedError


class TaskEnv(gym.Env):
    """One copy of a :class:`Task` as a ``gymnasium.Env``; subclasses set ``task_class``.

    Args:
        render_mode: ``"rgb_array"`` where ``metadata["render_modes"]`` lists it, else None.
        **kwargs: the task's difficulty knobs.
    """

    task_class: type[Task]
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            modes = self.metadata["render_modes"] or "none"
            raise ValueError(f"render_mode {render_mode!r} is not one of this env's: {modes}")
        self.render_mode = render_mode
        self.task = self.task_class(num_envs=1, **kwargs)
        self.observation_space = self.task.observation_space
        self.action_space = self.task.action_space
        self._rows = np.arange(1)
        self._keyed = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.task.start(self._rows, seed_keys(seed))
        elif not self._keyed:
            self.task.start(self._rows, _entropy_keys(self.np_random, 1))
        else:
            self.task.start(self._rows)
        self._keyed = True
        return self.task.observe(self._rows)[0], self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated = self.task.step(np.asarray(action)[None])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), self._info()

    def _info(self) -> dict[str, Any]:
        """``memory_target`` and ``memory_age`` as ints where the task has them, else empty."""
        memory = self.task.memory(self._rows)
        if memory is None:
            return {}
        return {"memory_target": int(memory[0][0]), "memory_age": int(memory[1][0])}

    def render(self) -> np.ndarray | None:
        """The current picture ``[H, W, 3]`` uint8 with ``render_mode="rgb_array"``, else None."""
        if self.render_mode != "rgb_array":
            gym.logger.warn("render() called without render_mode='rgb_array': nothing to draw")
            return None
        return self.task.render(0)

    def get_state(self) -> dict[str, Any]:
        """Everything :meth:`set_state` needs to continue exactly from here (numpy and plain
        data: ``recurrl``'s exact resume stores it in checkpoints)."""
        return _env_state(self, self.task)

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state` of an env with the same arguments (any instance)."""
        _set_env_state(self, self.task, state)


class TaskVectorEnv(gym.vector.VectorEnv):
    """``N`` copies of a :class:`Task` as a ``VectorEnv``; subclasses set ``task_class``.

    Autoreset is ``SAME_STEP`` (see the module docstring for ``info["final_obs"]`` and for
    ``info["memory_target"]`` / ``info["memory_age"]``).

    Args:
        num_envs: ``N``.
        max_episode_steps: optional time limit; copies reaching it are truncated (as
            Gymnasium's ``TimeLimit`` does for the single env). Tasks terminate on their own.
        **kwargs: the task's difficulty knobs.
    """

    task_class: type[Task]
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self, num_envs: int = 1, max_episode_steps: int | None = None, **kwargs: Any
    ) -> None:
        self.task = self.task_class(num_envs=num_envs, **kwargs)
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.single_observation_space = self.task.observation_space
        self.single_action_space = self.task.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._all_rows = np.arange(num_envs)
        self._keyed = False
        obs_bytes = num_envs * self.single_observation_space.dtype.itemsize
        _raise_mmap_threshold(4 * obs_bytes * int(np.prod(self.single_observation_space.shape)))

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all copies, or those in ``options["reset_mask"]`` ([N] bool).

        ``seed=s`` seeds copy ``i`` with ``s + i``; a list gives one seed per copy.
        """
        rows = self._all_rows
        if options is not None and "reset_mask" in options:
            rows = np.flatnonzero(_check_reset_mask(options["reset_mask"], self.num_envs))
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
        self.task.start(rows, None if keys is None else keys[rows])
        return self.task.observe(self._all_rows), self._info()

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, reward, terminated, truncated = self.task.step(np.asarray(actions))
        if self.max_episode_steps is not None:
            truncated |= self.task.elapsed >= self.max_episode_steps
        done = terminated | truncated
        if not done.any():
            return obs, reward, terminated, truncated, self._info()
        rows = np.flatnonzero(done)
        self.task.start(rows)
        next_obs = obs.copy()  # obs keeps the final observations of the ended episodes
        next_obs[rows] = self.task.observe(rows)
        info = self._info()  # after the resets: it describes next_obs, like the observations
        info.update(final_obs=obs, _final_obs=done)
        return next_obs, reward, terminated, truncated, info

    def _info(self) -> dict[str, Any]:
        """``memory_target`` and ``memory_age`` ``[N]`` where the task has them, else empty."""
        memory = self.task.memory(self._all_rows)
        if memory is None:
            return {}
        return {"memory_target": memory[0], "memory_age": memory[1]}

    def get_state(self) -> dict[str, Any]:
        """Everything :meth:`set_state` needs to continue exactly from here (numpy and plain
        data: ``recurrl``'s exact resume stores it in checkpoints)."""
        return _env_state(self, self.task)

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state` of an env with the same arguments (any instance)."""
        _set_env_state(self, self.task, state)


def _env_state(env: gym.Env | gym.vector.VectorEnv, task: Task) -> dict[str, Any]:
    """The whole state of a task env: task arrays, ``_keyed`` and the ``np_random`` stream."""
    rng = env._np_random  # None until first used: keep it that way, do not draw a seed
    return {
        "task": task.get_state(),
        "keyed": env._keyed,
        "np_random": None if rng is None else rng.bit_generator.state,
        "np_random_seed": env._np_random_seed,
    }


def _set_env_state(env: gym.Env | gym.vector.VectorEnv, task: Task, state: dict) -> None:
    task.set_state(state["task"])
    env._keyed = bool(state["keyed"])
    if state["np_random"] is None:
        env._np_random = None
    else:
        name = state["np_random"]["bit_generator"]
        generator = np.random.Generator(getattr(np.random, name)())
        generator.bit_generator.state = state["np_random"]
        env._np_random = generator
    env._np_random_seed = state["np_random_seed"]


GRID_LINE, BLANK, ASK = (40, 40, 40), (220, 220, 220), (170, 200, 240)
MARKER, TARGET_FRAME = (40, 90, 220), (255, 255, 255)
SYMBOL_COLOURS = np.array(
    [[220, 50, 50], [50, 170, 50], [60, 90, 230], [230, 160, 40], [180, 60, 200], [40, 190, 200]],
    dtype=np.uint8,
)
"""Colours of symbols 0, 1, 2, ... in pictures (cycling)."""


def grid_picture(colours: np.ndarray, cell: int = 16) -> np.ndarray:
    """A picture ``[H * cell, W * cell, 3]`` uint8 of a grid of cell colours ``[H, W, 3]``,
    each cell framed by a dark line at its right and bottom edge."""
    image = np.asarray(colours, dtype=np.uint8).repeat(cell, axis=0).repeat(cell, axis=1)
    image[cell - 1 :: cell] = GRID_LINE
    image[:, cell - 1 :: cell] = GRID_LINE
    return image


def symbol_tape(
    symbols: np.ndarray, current: int, target: int | None = None, cell: int = 16
) -> np.ndarray:
    """A picture ``[2 * cell, T * cell, 3]`` of a sequence task over its ``T`` steps.

    Top row: step ``t``'s symbol in ``SYMBOL_COLOURS`` (``-1``: not shown, light grey; ``-2``:
    a step that asks for an answer, light blue), the step ``target`` (the symbol to be named
    now) framed in white; bottom row: a blue disc under the ``current`` step.
    """
    colours = np.empty((2, len(symbols), 3), dtype=np.uint8)  # (rows, steps, RGB)
    colours[:] = BLANK
    shown = symbols >= 0
    colours[0, shown] = SYMBOL_COLOURS[symbols[shown] % len(SYMBOL_COLOURS)]
    colours[0, symbols == -2] = ASK
    image = grid_picture(colours, cell)
    if target is not None:
        frame_cell(image, 0, target, TARGET_FRAME, cell)
    paint_disc(image, 1, min(current, len(symbols) - 1), MARKER, cell)
    return image


def frame_cell(image: np.ndarray, row: int, col: int, colour: tuple, cell: int = 16) -> None:
    """Draw a two-pixel frame of ``colour`` inside grid cell ``(row, col)`` of ``image``."""
    box = image[row * cell : (row + 1) * cell - 1, col * cell : (col + 1) * cell - 1]
    box[:2], box[-2:], box[:, :2], box[:, -2:] = colour, colour, colour, colour


def paint_disc(image: np.ndarray, row: int, col: int, colour: tuple, cell: int = 16) -> None:
    """Paint a filled disc of ``colour`` into grid cell ``(row, col)`` of ``image``."""
    y, x = np.ogrid[:cell, :cell]
    centre, radius = (cell - 2) / 2, (cell - 2) / 2 - 1.5
    inside = (y - centre) ** 2 + (x - centre) ** 2 <= radius**2  # (cell, cell)
    image[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell][inside] = colour


def _raise_mmap_threshold(nbytes: int) -> None:
    """Let arrays of up to ``nbytes`` come from the heap rather than fresh ``mmap`` pages.

    Every step returns newly allocated arrays (users keep them). glibc serves allocations above
    its mmap threshold (128 KiB in a fresh process) with new pages, so each step would pay page
    faults and zeroing: 4x slower at 4096 copies of a 5x5x2 image. Freeing a larger block raises
    the threshold to its size (glibc's dynamic threshold, up to 32 MiB), which is what this
    allocation does; a long-running trainer usually gets there by itself. Harmless elsewhere.
    """
    block = np.empty(min(max(nbytes, 1 << 20), 16 << 20), dtype=np.uint8)
    del block


def _entropy_keys(np_random: np.random.Generator, count: int) -> np.ndarray:
    return np_random.integers(0, 1 << 64, size=count, dtype=np.uint64)


def _check_reset_mask(mask: Any, num_envs: int) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (num_envs,):
        raise ValueError(f"options['reset_mask'] must be a bool array of shape ({num_envs},)")
    return mask
