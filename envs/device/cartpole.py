"""CartPole without velocities on the device: :mod:`envs.cartpole` as torch tensor ops.

The same float64 Euler dynamics, operation for operation, and the same per-copy randomness:
every copy's PCG64 generator (the one ``numpy.random.Generator`` of
:class:`envs.cartpole.CartPoleNoVelocityVectorEnv` uses) is kept as eight 16-bit limbs of its
128-bit state and increment in int64 tensors, and an auto-reset draws the four
``uniform(-0.05, 0.05)`` numbers ``Generator.uniform`` would (four PCG64 steps, XSL-RR output,
top 53 bits), so copy ``i`` seeded ``s`` follows the numpy env's copy ``i`` seeded ``s`` episode
after episode. ``reset`` (seeding, ``options["low"]`` / ``["high"]``) runs on the host with
numpy generators made from the limbs; ``step`` never synchronises with the host.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.classic_control.utils import maybe_parse_reset_bounds
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from torch import Tensor

from ..cartpole import (
    FORCE_MAG,
    GRAVITY,
    LENGTH,
    MASSPOLE,
    POLEMASS_LENGTH,
    RESET_HIGH,
    RESET_LOW,
    TAU,
    THETA_THRESHOLD,
    TOTAL_MASS,
    X_THRESHOLD,
    observation_space,
)
from .core import as_mask, srl

_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645  # numpy's PCG64 multiplier
_MASK128 = (1 << 128) - 1
_LIMBS, _BITS = 8, 16  # a 128-bit number as 8 limbs of 16 bits (products fit in int64)
_DRAWS = 4  # CartPoleEnv.reset draws uniform(low, high, size=(4,))


def _limbs(value: int) -> list[int]:
    return [(value >> (_BITS * i)) & 0xFFFF for i in range(_LIMBS)]


def _from_limbs(limbs: np.ndarray) -> int:
    return sum(int(v) << (_BITS * i) for i, v in enumerate(limbs))


def _product_matrix(constants: list[int], device: torch.device) -> Tensor:
    """``[8, K * 8]`` float64 with ``M[i, 8 k + j] = limb j - i of constants[k]`` (0 for
    j < i): the limbs of ``x * c_k mod 2^128`` before carries are ``(x @ M)[8 k + j]``. Every
    product is below 2^32 and every sum below 2^35, so a float64 product is exact."""
    matrix = np.zeros((_LIMBS, len(constants), _LIMBS), dtype=np.float64)
    for k, constant in enumerate(constants):
        limbs = _limbs(constant)
        for i in range(_LIMBS):
            matrix[i, k, i:] = limbs[: _LIMBS - i]
    return torch.from_numpy(matrix.reshape(_LIMBS, -1)).to(device)


def _carry(limbs: Tensor) -> Tensor:
    """Limbs ``[..., 8]`` of any size below 2^62 normalised to 16 bits each (mod 2^128)."""
    parts = list(limbs.unbind(-1))
    for i in range(_LIMBS - 1):
        parts[i + 1] = parts[i + 1] + (parts[i] >> _BITS)
        parts[i] = parts[i] & 0xFFFF
    parts[-1] = parts[-1] & 0xFFFF
    return torch.stack(parts, -1)


def _word(limbs: Tensor) -> Tensor:
    """Four 16-bit limbs ``[..., 4]`` as one int64 (the uint64 they spell)."""
    return limbs[..., 0] | (limbs[..., 1] << 16) | (limbs[..., 2] << 32) | (limbs[..., 3] << 48)


class CartPoleNoVelocityTorchVectorEnv(gym.vector.VectorEnv):
    """``N`` copies of CartPole-v1 observing ``[x, theta]``, as tensors on ``device``.

    See :class:`envs.cartpole.CartPoleNoVelocityVectorEnv` (dynamics, seeding, state) and
    :mod:`envs.device.core` (the tensor API). Actions: ``[N]`` integers, 1 pushes right and any
    other value left (values are not checked: that would need the host).

    Args:
        num_envs: ``N``.
        device: where the tensors live.
        max_episode_steps: time limit per episode (``TimeLimit`` semantics); None for none.
        sutton_barto_reward: reward 0 per step, -1 when the pole falls.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 500,
        sutton_barto_reward: bool = False,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_episode_steps = max_episode_steps
        self.can_truncate = max_episode_steps is not None
        self.sutton_barto_reward = bool(sutton_barto_reward)
        self.single_observation_space = observation_space()
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        f64 = {"dtype": torch.float64, "device": self.device}
        i64 = {"dtype": torch.int64, "device": self.device}
        self.state = torch.zeros((4, num_envs), **f64)
        """``[4, N]`` float64 rows ``x, x_dot, theta, theta_dot``."""
        self.elapsed = torch.zeros(num_envs, **i64)
        self.pcg_state = torch.zeros((num_envs, _LIMBS), **i64)
        self.pcg_inc = torch.zeros((num_envs, _LIMBS), **i64)
        self._pcg_offsets = torch.zeros((num_envs, _DRAWS, _LIMBS), **i64)
        """(MULT^(k-1) + ... + 1) * inc per copy and k = 1..4, limbs not carried (host-made)."""
        self.has_rng = [False] * num_envs  # host: copies whose generator exists
        self.rng_extra = [(0, 0)] * num_envs  # host: (has_uint32, uinteger), never used here
        self._started = False
        # State after k = 1..4 steps: MULT^k * state + (MULT^(k-1) + ... + 1) * inc.
        powers = [pow(_PCG_MULT, k, 1 << 128) for k in range(1, _DRAWS + 1)]
        sums = [
            sum(pow(_PCG_MULT, j, 1 << 128) for j in range(k)) & _MASK128
            for k in range(1, _DRAWS + 1)
        ]
        self._mult_matrix = _product_matrix(powers, self.device)
        self._sums = sums

    # --- Gymnasium API -----------------------------------------------------------------------

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        """As :meth:`envs.cartpole.CartPoleNoVelocityVectorEnv.reset` (on the host)."""
        rows = np.arange(self.num_envs)
        if options is not None and "reset_mask" in options:
            rows = np.flatnonzero(as_mask(options["reset_mask"], self.num_envs))
        if isinstance(seed, list | tuple | np.ndarray):
            if len(seed) != self.num_envs:
                raise ValueError(f"got {len(seed)} seeds for num_envs={self.num_envs}")
            super().reset(seed=None)
            seeds = list(seed)
        else:
            super().reset(seed=seed)
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        low, high = maybe_parse_reset_bounds(options, RESET_LOW, RESET_HIGH)
        rngs = self._generators()
        state = self.state.cpu().numpy().copy()
        for row in rows.tolist():
            if seeds[row] is not None:
                rngs[row] = seeding.np_random(int(seeds[row]))[0]
            elif rngs[row] is None:
                entropy = int(self.np_random.integers(0, 2**63))
                rngs[row] = seeding.np_random(entropy)[0]
            state[:, row] = rngs[row].uniform(low=low, high=high, size=(4,))
        self._set_generators(rngs)
        self.state.copy_(torch.from_numpy(state))
        self.elapsed[torch.from_numpy(rows).to(self.device)] = 0
        self._started = True
        return self._observe(), {}

    def step(self, actions: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("Cannot call step() before reset()")
        if isinstance(actions, Tensor):
            actions = actions.to(self.device)
        else:
            actions = torch.as_tensor(np.asarray(actions), device=self.device)
        if tuple(actions.shape) != (self.num_envs,) or actions.dtype.is_floating_point:
            raise ValueError(
                f"actions must be an integer tensor of shape ({self.num_envs},), got "
                f"{actions.dtype} {tuple(actions.shape)}"
            )
        x, x_dot, theta, theta_dot = self.state.unbind(0)
        force = torch.where(actions == 1, FORCE_MAG, -FORCE_MAG).to(torch.float64)
        costheta = torch.cos(theta)
        sintheta = torch.sin(theta)
        # CartPoleEnv.step, operation for operation (float64).
        temp = (force + POLEMASS_LENGTH * torch.square(theta_dot) * sintheta) / TOTAL_MASS
        thetaacc = (GRAVITY * sintheta - costheta * temp) / (
            LENGTH * (4.0 / 3.0 - MASSPOLE * torch.square(costheta) / TOTAL_MASS)
        )
        xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS
        rates = torch.stack([x_dot, xacc, theta_dot, thetaacc])
        self.state.add_(TAU * rates)  # Euler: every entry from the old state

        terminated = (self.state[0].abs() > X_THRESHOLD) | (self.state[2].abs() > THETA_THRESHOLD)
        if self.sutton_barto_reward:
            reward = torch.where(terminated, -1.0, 0.0)
        else:
            reward = torch.ones(self.num_envs, dtype=torch.float32, device=self.device)
        self.elapsed.add_(1)
        if self.max_episode_steps is None:
            truncated = torch.zeros_like(terminated)
        else:
            truncated = self.elapsed >= self.max_episode_steps
        obs = self._observe()
        done = terminated | truncated
        draws, advanced = self._draw()
        self.state.copy_(torch.where(done, draws, self.state))
        self.pcg_state.copy_(torch.where(done[:, None], advanced, self.pcg_state))
        self.elapsed.masked_fill_(done, 0)
        next_obs = torch.where(done[:, None], self._observe(), obs)
        return next_obs, reward, terminated, truncated, {"final_obs": obs, "_final_obs": done}

    def _observe(self) -> Tensor:
        """``[N, 2]`` float32 ``[x, theta]``."""
        return self.state[0::2].T.to(torch.float32).contiguous()

    def _draw(self) -> tuple[Tensor, Tensor]:
        """Every copy's next four ``uniform(-0.05, 0.05)`` draws ``[4, N]`` float64 and its
        generator state after them ``[N, 8]`` (applied by the caller where a copy resets)."""
        # [N, 8] @ [8, 4 * 8]: limbs of MULT^k * state, each < 2^35 (exact in float64).
        products = (self.pcg_state.to(torch.float64) @ self._mult_matrix).to(torch.int64)
        products = products.reshape(self.num_envs, _DRAWS, _LIMBS) + self._pcg_offsets
        states = _carry(products)  # [N, 4, 8]: the state after 1, 2, 3, 4 steps
        low, high = _word(states[..., :4]), _word(states[..., 4:])
        word = high ^ low  # XSL-RR: rotate right by the top 6 bits of high
        rot = states[..., 7] >> 10
        left = word << ((64 - rot) & 63)
        mask = torch.bitwise_left_shift(torch.ones_like(rot), 64 - rot) - 1  # rot >= 1
        right = torch.where(rot == 0, word, (word >> rot) & mask)
        bits = right | left  # [N, 4], uint64 bits in int64
        unit = srl(bits, 11).to(torch.float64) * (1.0 / (1 << 53))
        draws = RESET_LOW + (RESET_HIGH - RESET_LOW) * unit
        return draws.T, states[:, -1]

    # --- generators on the host --------------------------------------------------------------

    def _generators(self) -> list[np.random.Generator | None]:
        states = self.pcg_state.cpu().numpy()
        incs = self.pcg_inc.cpu().numpy()
        return [
            _generator(_from_limbs(states[i]), _from_limbs(incs[i]), *self.rng_extra[i])
            if self.has_rng[i]
            else None
            for i in range(self.num_envs)
        ]

    def _set_generators(self, rngs: list[np.random.Generator | None]) -> None:
        states = np.zeros((self.num_envs, _LIMBS), dtype=np.int64)
        incs = np.zeros((self.num_envs, _LIMBS), dtype=np.int64)
        offsets = np.zeros((self.num_envs, _DRAWS, _LIMBS), dtype=np.int64)
        for i, rng in enumerate(rngs):
            self.has_rng[i] = rng is not None
            if rng is None:
                continue
            full = rng.bit_generator.state
            if full["bit_generator"] != "PCG64":
                raise ValueError(f"copy {i}'s generator is {full['bit_generator']}, not PCG64")
            states[i] = _limbs(full["state"]["state"])
            incs[i] = _limbs(full["state"]["inc"])
            offsets[i] = [_limbs((total * full["state"]["inc"]) & _MASK128) for total in self._sums]
            self.rng_extra[i] = (full["has_uint32"], full["uinteger"])
        self.pcg_state.copy_(torch.from_numpy(states))
        self.pcg_inc.copy_(torch.from_numpy(incs))
        self._pcg_offsets.copy_(torch.from_numpy(offsets))

    # --- exact resume ------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """What :meth:`envs.cartpole.CartPoleNoVelocityVectorEnv.get_state` returns (host)."""
        rng = self._np_random  # None until first used: keep it that way, do not draw a seed
        return {
            "state": self.state.cpu().numpy().copy(),
            "elapsed": self.elapsed.cpu().numpy().copy(),
            "rngs": [None if g is None else g.bit_generator.state for g in self._generators()],
            "started": self._started,
            "np_random": None if rng is None else rng.bit_generator.state,
            "np_random_seed": self._np_random_seed,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state` (this env's or the numpy env's, same arguments)."""
        for name in ("state", "elapsed"):
            current = getattr(self, name)
            value = np.asarray(state[name])
            if value.shape != tuple(current.shape):
                raise ValueError(
                    f"{type(self).__name__}.set_state: {name} has shape {value.shape}, "
                    f"this env's is {tuple(current.shape)}"
                )
            current.copy_(torch.as_tensor(value, dtype=current.dtype))
        if len(state["rngs"]) != self.num_envs:
            raise ValueError(
                f"{type(self).__name__}.set_state: {len(state['rngs'])} generators, "
                f"this env has num_envs={self.num_envs}"
            )
        rngs = [None if s is None else _state_generator(s) for s in state["rngs"]]
        self._set_generators(rngs)
        self._started = bool(state["started"])
        self._np_random = (
            None if state["np_random"] is None else _state_generator(state["np_random"])
        )
        self._np_random_seed = state["np_random_seed"]


def _generator(state: int, inc: int, has_uint32: int, uinteger: int) -> np.random.Generator:
    bit_generator = np.random.PCG64()
    bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": inc},
        "has_uint32": has_uint32,
        "uinteger": uinteger,
    }
    return np.random.Generator(bit_generator)


def _state_generator(state: dict[str, Any]) -> np.random.Generator:
    generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
    generator.bit_generator.state = state
    return generator
