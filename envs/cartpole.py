"""CartPole without velocities, natively batched: ``recurrl/CartPoleNoVelocity-v0``'s vector env.

:class:`CartPoleNoVelocityVectorEnv` advances ``N`` copies of Gymnasium's ``CartPole-v1`` with
array operations and observes cart position and pole angle only, as the single env
``gymnasium.make("recurrl/CartPoleNoVelocity-v0")`` (``envs.wrappers.cartpole_no_velocity``:
``CartPoleEnv`` under ``MaskObservation``, ``TimeLimit``) does. It is registered as the id's
``vector_entry_point``; ``gymnasium.make_vec(id, num_envs=N)`` passes the spec's
``max_episode_steps=500`` to it (an explicit ``max_episode_steps=`` overrides it).

Same dynamics as the single env: the Euler integrator of ``CartPoleEnv`` in float64 with its
constants and the operations in its order, termination when ``|x| > 2.4`` or
``|theta| > 12 degrees``, reward 1 at every step including the terminating one (``-1`` at the
terminating step and 0 otherwise with ``sutton_barto_reward=True``), float32 observations
``[x, theta]`` in the masked single env's bounds, ``Discrete(2)`` actions (0 pushes left, 1
right). Truncation follows ``TimeLimit``: a copy is truncated at its ``max_episode_steps``-th
step even when that step also terminates it (both flags True then).

Autoreset is ``AutoresetMode.SAME_STEP``, as in :mod:`envs.core`: a copy that ends at a step
returns its next episode's first observation, ``info["final_obs"]`` (a dense ``[N, 2]`` array)
holds the last observation of the ended episode and ``info["_final_obs"]`` (``[N]`` bool) marks
which rows mean something; steps where nothing ended return an empty ``info``.

Randomness: each copy has its own ``np.random.Generator`` made like Gymnasium's
``seeding.np_random``, and every episode start draws ``uniform(-0.05, 0.05, size=(4,))`` from it,
as ``CartPoleEnv.reset`` does. ``reset(seed=s)`` seeds copy ``i`` with ``s + i`` (Gymnasium's
``SyncVectorEnv`` convention), so copy ``i`` follows exactly the trajectory of a single env reset
with ``seed=s + i`` and then auto-reset without a seed, episode after episode, for the same
actions. A copy never seeded gets a generator seeded from the vector env's ``np_random`` at its
first reset.

Exact resume: ``get_state()`` returns the physical state, the step counters, every copy's
generator state (``bit_generator.state``) and the ``np_random`` stream as numpy arrays and plain
data; ``set_state`` on an env made with the same arguments continues exactly from there
(``recurrl``'s ``StatefulVectorEnv``).

Numpy and Gymnasium only: this module never imports ``recurrl``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.utils import maybe_parse_reset_bounds
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

# CartPoleEnv's constants, computed as it computes them.
GRAVITY = 9.8
MASSCART = 1.0
MASSPOLE = 0.1
TOTAL_MASS = MASSPOLE + MASSCART
LENGTH = 0.5  # half the pole's length
POLEMASS_LENGTH = MASSPOLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds between state updates
THETA_THRESHOLD = 12 * 2 * math.pi / 360
X_THRESHOLD = 2.4
RESET_LOW, RESET_HIGH = -0.05, 0.05
KEEP = [0, 2]  # observed entries of the state [x, x_dot, theta, theta_dot]

_FORCES = np.array([-FORCE_MAG, FORCE_MAG])  # indexed by the action
_THRESHOLDS = np.array([[X_THRESHOLD], [THETA_THRESHOLD]])  # of |x| and |theta|


def observation_space() -> gym.spaces.Box:
    """The single env's space: ``CartPoleEnv``'s bounds at the kept entries, float32."""
    high = np.array(
        [X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf],
        dtype=np.float32,
    )
    return gym.spaces.Box(low=(-high)[KEEP], high=high[KEEP], dtype=np.float32)


class CartPoleNoVelocityVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of CartPole-v1 observing ``[x, theta]``, advanced as arrays.

    See the module docstring for the dynamics, autoreset, seeding and state.

    Args:
        num_envs: ``N``, the number of copies.
        max_episode_steps: time limit per episode (``TimeLimit`` semantics); None for none.
        sutton_barto_reward: ``CartPoleEnv``'s option: reward 0 per step, -1 when the pole falls.

    Actions are an ``[N]`` integer array of 0 / 1. For speed only the shape and dtype are
    checked (``ValueError``); values >= 2 raise ``IndexError``, negative ones are not caught.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 500,
        sutton_barto_reward: bool = False,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.sutton_barto_reward = bool(sutton_barto_reward)
        self.single_observation_space = observation_space()
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.state = np.zeros((4, num_envs), dtype=np.float64)
        """``[4, N]`` float64 rows ``x, x_dot, theta, theta_dot`` (contiguous rows)."""
        self.elapsed = np.zeros(num_envs, dtype=np.int64)
        self.rngs: list[np.random.Generator | None] = [None] * num_envs
        self._started = False
        self._all_rows = np.arange(num_envs)
        self._rates = np.empty((4, num_envs), dtype=np.float64)  # step's scratch

    # --- Gymnasium API -----------------------------------------------------------------------

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all copies, or those in ``options["reset_mask"]`` ([N] bool).

        ``seed=s`` seeds copy ``i`` with ``s + i``; a list gives one seed per copy (None
        entries leave that copy's generator as it is). ``options["low"]`` / ``["high"]`` bound
        the initial state of this reset, as for ``CartPoleEnv`` (auto-resets use +-0.05).
        """
        rows = self._all_rows
        if options is not None and "reset_mask" in options:
            rows = np.flatnonzero(_check_reset_mask(options["reset_mask"], self.num_envs))
        if isinstance(seed, list | tuple | np.ndarray):
            if len(seed) != self.num_envs:
                raise ValueError(f"got {len(seed)} seeds for num_envs={self.num_envs}")
            super().reset(seed=None)
            seeds = list(seed)
        else:
            super().reset(seed=seed)
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        low, high = maybe_parse_reset_bounds(options, RESET_LOW, RESET_HIGH)
        for row in rows.tolist():
            if seeds[row] is not None:
                self.rngs[row] = seeding.np_random(int(seeds[row]))[0]
            elif self.rngs[row] is None:
                entropy = int(self.np_random.integers(0, 2**63))
                self.rngs[row] = seeding.np_random(entropy)[0]
            self.state[:, row] = self.rngs[row].uniform(low=low, high=high, size=(4,))
        self.elapsed[rows] = 0
        self._started = True
        return self._observe(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._started:
            raise gym.error.ResetNeeded("Cannot call step() before reset()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu":
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},), got "
                f"{actions.dtype} {actions.shape}"
            )
        state = self.state
        theta, theta_dot = state[2], state[3]  # views
        force = _FORCES[actions]  # 0 pushes left, 1 right; 2 and above raise IndexError
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        # CartPoleEnv.step, operation for operation (float64).
        temp = (force + POLEMASS_LENGTH * np.square(theta_dot) * sintheta) / TOTAL_MASS
        rates = self._rates  # d/dt of [x, x_dot, theta, theta_dot]: [x_dot, xacc, ...]
        thetaacc = np.divide(
            GRAVITY * sintheta - costheta * temp,
            LENGTH * (4.0 / 3.0 - MASSPOLE * np.square(costheta) / TOTAL_MASS),
            out=rates[3],
        )
        np.subtract(temp, POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS, out=rates[1])
        rates[0::2] = state[1::2]
        # Euler: every entry from the old state, x + tau * x_dot etc., as CartPoleEnv does.
        state += TAU * rates

        beyond = np.abs(state[0::2]) > _THRESHOLDS  # [2, N]: |x| > 2.4, |theta| > 12 deg
        terminated = beyond[0] | beyond[1]
        if self.sutton_barto_reward:
            reward = np.where(terminated, -1.0, 0.0)
        else:
            reward = np.ones(self.num_envs, dtype=np.float64)
        self.elapsed += 1
        if self.max_episode_steps is None:
            truncated = np.zeros(self.num_envs, dtype=np.bool_)
        else:
            truncated = self.elapsed >= self.max_episode_steps
        obs = self._observe()
        done = terminated | truncated
        if not done.any():
            return obs, reward, terminated, truncated, {}
        rows = np.flatnonzero(done)
        for row in rows.tolist():  # each copy draws from its own generator
            state[:, row] = self.rngs[row].uniform(low=RESET_LOW, high=RESET_HIGH, size=(4,))
        self.elapsed[rows] = 0
        next_obs = obs.copy()  # obs keeps the final observations of the ended episodes
        next_obs[rows, 0] = state[0, rows]
        next_obs[rows, 1] = state[2, rows]
        return next_obs, reward, terminated, truncated, {"final_obs": obs, "_final_obs": done}

    def _observe(self) -> np.ndarray:
        """``[N, 2]`` float32 ``[x, theta]``, a new C-contiguous array."""
        return self.state[0::2].T.astype(np.float32, order="C")

    # --- exact resume ------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything :meth:`set_state` needs to continue exactly from here (numpy arrays and
        plain data: ``recurrl``'s exact resume stores it in checkpoints)."""
        rng = self._np_random  # None until first used: keep it that way, do not draw a seed
        return {
            "state": self.state.copy(),
            "elapsed": self.elapsed.copy(),
            "rngs": [None if g is None else g.bit_generator.state for g in self.rngs],
            "started": self._started,
            "np_random": None if rng is None else rng.bit_generator.state,
            "np_random_seed": self._np_random_seed,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state` of an env with the same arguments (any instance)."""
        for name in ("state", "elapsed"):
            current = getattr(self, name)
            value = np.asarray(state[name], dtype=current.dtype)
            if value.shape != current.shape:
                raise ValueError(
                    f"{type(self).__name__}.set_state: {name} has shape {value.shape}, "
                    f"this env's is {current.shape}"
                )
            setattr(self, name, value.copy())
        if len(state["rngs"]) != self.num_envs:
            raise ValueError(
                f"{type(self).__name__}.set_state: {len(state['rngs'])} generators, "
                f"this env has num_envs={self.num_envs}"
            )
        self.rngs = [_generator(s) for s in state["rngs"]]
        self._started = bool(state["started"])
        self._np_random = _generator(state["np_random"])
        self._np_random_seed = state["np_random_seed"]


def _generator(state: dict[str, Any] | None) -> np.random.Generator | None:
    """A generator in ``bit_generator.state`` ``state`` (None stays None)."""
    if state is None:
        return None
    generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
    generator.bit_generator.state = state
    return generator


def _check_reset_mask(mask: Any, num_envs: int) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (num_envs,):
        raise ValueError(f"options['reset_mask'] must be a bool array of shape ({num_envs},)")
    return mask
