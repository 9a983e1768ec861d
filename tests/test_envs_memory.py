"""Memory is necessary and sufficient: memoryless policies stay below each env's
``reward_threshold``, policies with memory reach the optimal return.

Memoryless policies are searched exhaustively where the observation set is small (TMaze,
CueRecall, SequenceRecall), otherwise the best strategy that ignores the cue is used (its
optimality is argued in each env's docstring). Policies act on whole batches: ``policy(obs,
first) -> actions``, with ``first[i]`` set when ``obs[i]`` starts an episode.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest

from recurrl.envs.bandit import oracle_return
from recurrl.envs.memory_grid import BALL, TYPE_LEVELS, colour_level

Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]


def first_episode_returns(
    env_id: str, make_policy: Callable[[gym.vector.VectorEnv], Policy], num_envs: int, **kwargs
) -> np.ndarray:
    """Return ``[num_envs]`` of each copy's first episode under the policy."""
    envs = gym.make_vec(env_id, num_envs=num_envs, **kwargs)
    policy = make_policy(envs)
    obs, _ = envs.reset(seed=0)
    first = np.ones(num_envs, dtype=bool)
    returns = np.zeros(num_envs)
    finished = np.zeros(num_envs, dtype=bool)
    while not finished.all():
        obs, reward, terminated, truncated, _ = envs.step(policy(obs, first))
        returns += np.where(finished, 0.0, reward)
        first = terminated | truncated
        finished |= first
    return returns


def threshold(env_id: str) -> float:
    return gym.spec(env_id).reward_threshold


def optimal(env_id: str) -> float:
    from recurrl import envs

    return envs.ENVIRONMENTS[env_id]["optimal_return"]


# ---------------------------------------------------------------------------------- TMaze


def tmaze_memory(envs: gym.vector.VectorEnv) -> Policy:
    goal = np.zeros(envs.num_envs, dtype=np.int64)

    def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        goal[first] = np.where(obs[first, 0] == 1, 1, 2)  # remember: cue up -> UP, else DOWN
        return np.where(obs[:, 2] == 1, goal, 0)

    return act


def tmaze_memoryless(table: tuple[int, ...]) -> Callable:
    """Deterministic map from the 4 possible observations to actions."""

    def make(envs: gym.vector.VectorEnv) -> Policy:
        def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
            kind = np.where(obs[:, 0] == 1, 0, np.where(obs[:, 1] == 1, 1, 2 + obs[:, 2]))
            return np.asarray(table)[kind.astype(np.int64)]

        return act

    return make


def test_tmaze() -> None:
    env_id = "recurrl/TMaze-v0"
    assert first_episode_returns(env_id, tmaze_memory, 64).min() == optimal(env_id)
    best = max(
        first_episode_returns(env_id, tmaze_memoryless(table), 512, length=6).mean()
        for table in itertools.product(range(3), repeat=4)
    )
    assert best < 0.2 < threshold(env_id)  # 0 in expectation; 512 episodes, 81 policies


# ------------------------------------------------------------------------------ CueRecall


def cue_recall_memory(envs: gym.vector.VectorEnv) -> Policy:
    k = envs.unwrapped.task.num_bits
    bits = np.zeros((envs.num_envs, k), dtype=np.int64)

    def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        bits[first] = obs[first, :k]
        return bits[np.arange(len(obs)), obs[:, k : 2 * k].argmax(1)]

    return act


def cue_recall_memoryless(answers: tuple[int, ...]) -> Callable:
    """Answer the query for bit q with ``answers[q]``."""

    def make(envs: gym.vector.VectorEnv) -> Policy:
        k = envs.unwrapped.task.num_bits
        return lambda obs, first: np.asarray(answers)[obs[:, k : 2 * k].argmax(1)]

    return make


def test_cue_recall() -> None:
    env_id = "recurrl/CueRecall-v0"
    assert first_episode_returns(env_id, cue_recall_memory, 256).min() == optimal(env_id)
    best = max(
        first_episode_returns(env_id, cue_recall_memoryless(answers), 1024).mean()
        for answers in itertools.product(range(2), repeat=4)
    )
    assert best < 0.15 < threshold(env_id)


# ------------------------------------------------------------------------- RepeatPrevious


def repeat_previous_memory(envs: gym.vector.VectorEnv) -> Policy:
    lag = envs.unwrapped.task.lag
    history = np.zeros((envs.num_envs, lag), dtype=np.int64)  # last `lag` symbols, oldest first

    def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        answer = history[:, 0].copy()
        history[:, :-1] = history[:, 1:]
        history[:, -1] = obs.argmax(1)
        return answer

    return act


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_repeat_previous(shift: int) -> None:
    env_id = "recurrl/RepeatPrevious-v0"
    if shift == 0:
        assert first_episode_returns(env_id, repeat_previous_memory, 256).min() == pytest.approx(
            optimal(env_id)
        )
    memoryless = first_episode_returns(
        env_id, lambda envs: lambda obs, first: (obs.argmax(1) + shift) % 4, 1024
    )
    assert memoryless.mean() == pytest.approx(2 / 4 - 1, abs=0.03)  # any memoryless policy


# ------------------------------------------------------------------------- SequenceRecall


def sequence_recall_memory(envs: gym.vector.VectorEnv) -> Policy:
    length = envs.unwrapped.task.length
    seen = np.zeros((envs.num_envs, length), dtype=np.int64)
    t = np.zeros(envs.num_envs, dtype=np.int64)

    def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        t[first] = 0
        showing = t < length
        seen[showing, t[showing]] = obs[showing, :4].argmax(1)
        answer = seen[np.arange(len(obs)), np.maximum(t - length, 0)]
        t[:] += 1
        return answer

    return act


def test_sequence_recall() -> None:
    env_id = "recurrl/SequenceRecall-v0"
    assert first_episode_returns(env_id, sequence_recall_memory, 256).min() == pytest.approx(
        optimal(env_id)
    )
    for symbol in range(4):  # recall observations are all alike: one answer for all
        returns = first_episode_returns(
            env_id, lambda envs, s=symbol: lambda obs, first: np.full(len(obs), s), 1024
        )
        assert returns.mean() == pytest.approx(2 / 4 - 1, abs=0.03)


# ----------------------------------------------------------------------------- MemoryGrid


def memory_grid_policy(cue_colour: Callable[[np.ndarray], np.ndarray], only_if=None) -> Callable:
    """Walk east, at the junction walk into the ball of ``cue_colour(first_obs)`` (a level).

    With ``only_if=c`` the policy stays in the room unless the cue it sees has colour ``c``
    (memoryless "selective participation": the cue is visible there).
    """
    ball = TYPE_LEVELS[BALL]

    def make(envs: gym.vector.VectorEnv) -> Policy:
        h = envs.unwrapped.task.view // 2
        wanted = np.zeros(envs.num_envs, dtype=np.uint8)

        def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
            wanted[first] = cue_colour(obs[first])
            at_junction = (obs[:, h - 1, h, 0] == ball) & (obs[:, h + 1, h, 0] == ball)
            turn = np.where(obs[:, h - 1, h, 1] == wanted, 0, 2)  # north or south
            action = np.where(at_junction, turn, 1)  # else east
            if only_if is not None:
                cue_seen = obs[:, h, h - 2, 0] == ball  # the cue, two cells west of the start
                waiting = cue_seen & (obs[:, h, h - 2, 1] != only_if)
                action = np.where(waiting, 0, action)  # north into a wall: stay
            return action

        return act

    return make


def test_memory_grid() -> None:
    env_id = "recurrl/MemoryGrid-v0"

    def remembered(obs: np.ndarray) -> np.ndarray:
        return obs[:, 2, 0, 1]  # cue two cells west of the centre of a 5 x 5 view

    returns = first_episode_returns(env_id, memory_grid_policy(remembered), 256)
    assert returns.min() == optimal(env_id)
    red = colour_level(1, num_colors=2)
    guess = first_episode_returns(env_id, memory_grid_policy(lambda obs: red), 1024)
    selective = first_episode_returns(env_id, memory_grid_policy(lambda obs: red, red), 1024)
    for memoryless in (guess, selective):
        assert abs(memoryless.mean()) < 0.1 < threshold(env_id)


# --------------------------------------------------------------------------------- Bandit


def bandit_thompson(envs: gym.vector.VectorEnv) -> Policy:
    """Thompson sampling from the (previous action, reward) history: a policy with memory."""
    n, arms = envs.num_envs, envs.unwrapped.task.num_arms
    wins, losses = np.ones((n, arms)), np.ones((n, arms))
    rng = np.random.default_rng(0)

    def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        wins[first], losses[first] = 1.0, 1.0
        pulled = obs[:, :arms].any(1)
        rows, arm = np.flatnonzero(pulled), obs[pulled, :arms].argmax(1)
        wins[rows, arm] += obs[pulled, arms]
        losses[rows, arm] += 1 - obs[pulled, arms]
        return rng.beta(wins, losses).argmax(1)

    return act


def bandit_win_stay_lose_shift(stay_after_win: float, stay_after_loss: float) -> Callable:
    """Memoryless: the observation holds the previous arm and reward, nothing more."""

    def make(envs: gym.vector.VectorEnv) -> Policy:
        arms = envs.unwrapped.task.num_arms
        rng = np.random.default_rng(1)

        def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
            previous = obs[:, :arms].argmax(1)
            stay_p = np.where(obs[:, arms] == 1, stay_after_win, stay_after_loss)
            other = (previous + rng.integers(1, arms, len(obs))) % arms
            action = np.where(rng.random(len(obs)) < stay_p, previous, other)
            return np.where(first, rng.integers(0, arms, len(obs)), action)

        return act

    return make


def bandit_oracle_arm(envs: gym.vector.VectorEnv) -> Policy:
    task = envs.unwrapped.task
    return lambda obs, first: task.probs.argmax(1)


def test_bandit() -> None:
    env_id = "recurrl/Bandit-v0"
    assert first_episode_returns(env_id, bandit_oracle_arm, 2048).mean() == pytest.approx(
        oracle_return(5), abs=0.01
    )
    assert first_episode_returns(env_id, bandit_thompson, 1024).mean() > threshold(env_id)
    best = max(
        first_episode_returns(env_id, bandit_win_stay_lose_shift(win, loss), 1024).mean()
        for win, loss in itertools.product([1.0, 0.9], [0.0, 0.3, 0.6])
    )
    assert best == pytest.approx(0.68, abs=0.02) and best < threshold(env_id) - 0.02


# ---------------------------------------------------------------------------- PointRecall


def point_recall_memory(envs: gym.vector.VectorEnv) -> Policy:
    goal = np.zeros((envs.num_envs, 2))
    speed = envs.unwrapped.task.max_speed

    def act(obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        goal[first] = obs[first, 2:4]
        return np.clip((goal - obs[:, :2]) / speed, -1, 1).astype(np.float32)

    return act


def test_point_recall() -> None:
    env_id = "recurrl/PointRecall-v0"
    returns = first_episode_returns(env_id, point_recall_memory, 256)
    assert returns.min() == pytest.approx(optimal(env_id), abs=1e-6)
    stay = first_episode_returns(env_id, lambda envs: lambda obs, first: np.zeros((256, 2)), 256)
    assert stay.max() == 0.0

    def head_out(envs: gym.vector.VectorEnv) -> Policy:  # memoryless: keep going one way
        return lambda obs, first: np.tile(np.float32([1.0, 0.3]), (len(obs), 1))

    assert first_episode_returns(env_id, head_out, 1024).mean() < 0.0 < threshold(env_id)
