"""Passive T-maze: remember a cue shown once while walking a corridor, then turn."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .core import EPISODE_STREAM, Task, TaskEnv, TaskVectorEnv, draw, grid_picture, paint_disc

FORWARD, UP, DOWN = 0, 1, 2

# Observation rows by situation: [cue up, cue down, at junction]; the cue is lit at t = 0 only.
_CUE_UP, _CUE_DOWN, _CORRIDOR, _JUNCTION = 0, 1, 2, 3
_OBSERVATIONS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=np.float32)  # (4, 3)

# Picture colours (RGB): corridor, wall, the cue lamp (lit at t = 0), goal and wrong arm, agent.
FLOOR, WALL, LAMP = (220, 220, 220), (70, 70, 70), (250, 200, 40)
GOAL_ARM, WRONG_ARM, AGENT = (80, 180, 80), (200, 90, 90), (40, 90, 220)


class TMaze(Task):
    """Batched passive T-maze (see :class:`TMazeEnv`)."""

    state_arrays = ("position", "goal")
    memory_classes = 2

    def __init__(self, num_envs: int, length: int = 20, time_budget: int | None = None) -> None:
        super().__init__(num_envs)
        if length < 1:
            raise ValueError(f"TMaze: length must be >= 1, got {length}")
        self.length = length
        self.horizon = 2 * (length + 1) if time_budget is None else time_budget
        if self.horizon < length + 1:
            raise ValueError(f"TMaze: time_budget must be >= length + 1 = {length + 1}")
        self.bump_penalty = 1.0 / (length + 1)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self.position = np.zeros(num_envs, dtype=np.int64)  # corridor cell, junction = length
        self.goal = np.zeros(num_envs, dtype=np.int64)  # UP or DOWN

    def new_episodes(self, rows: np.ndarray) -> None:
        self.position[rows] = 0
        self.goal[rows] = UP + (draw(self.episode_keys[rows], EPISODE_STREAM) >> np.uint64(63))

    def observe(self, rows: np.ndarray) -> np.ndarray:
        situation = np.where(self.position[rows] == self.length, _JUNCTION, _CORRIDOR)
        cue = self.goal[rows] - UP  # _CUE_UP or _CUE_DOWN
        return _OBSERVATIONS.take(np.where(self.elapsed[rows] == 0, cue, situation), axis=0)

    def memory(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cued side (0 up, 1 down), shown at t = 0 only: its age is the elapsed steps."""
        target = self.goal[rows]
        target -= UP
        return target, self.elapsed[rows]

    def render(self, row: int, cell: int = 16) -> np.ndarray:
        """The maze from above, ``[3 * cell, (length + 1) * cell, 3]``: the corridor in the
        middle row, the cue lamp above or below the start while the cue shows (t = 0), the
        cued arm green and the other red at the junction, the agent a blue disc."""
        colours = np.empty((3, self.length + 1, 3), dtype=np.uint8)  # (rows, cells, RGB)
        colours[:] = WALL
        colours[1] = FLOOR
        goal = self.goal[row]
        colours[0, -1] = GOAL_ARM if goal == UP else WRONG_ARM
        colours[2, -1] = GOAL_ARM if goal == DOWN else WRONG_ARM
        if self.elapsed[row] == 0 and goal in (UP, DOWN):
            colours[0 if goal == UP else 2, 0] = LAMP
        image = grid_picture(colours, cell)
        paint_disc(image, 1, int(self.position[row]), AGENT, cell)
        return image

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        at_junction = self.position == self.length
        forward = actions == FORWARD
        turned = at_junction & ~forward
        moved = forward & ~at_junction
        self.position += moved
        self.elapsed += 1
        out_of_time = (self.elapsed >= self.horizon) & ~turned
        answer = np.where(actions == self.goal, 1.0, -1.0)
        reward = np.where(turned, answer, np.where(moved, 0.0, -self.bump_penalty))
        reward[out_of_time] = -1.0
        situation = np.where(self.position == self.length, _JUNCTION, _CORRIDOR)
        obs = _OBSERVATIONS.take(situation, axis=0)
        return obs, reward, turned | out_of_time, np.zeros(self.num_envs, dtype=bool)


class TMazeEnv(TaskEnv):
    """Passive T-maze: a cue shown at the first step says which way to turn at the far end.

    ## Description

    The agent starts at cell 0 of a corridor of ``length`` cells and must walk to the junction
    at cell ``length``, then turn up or down. The correct side is shown only in the first
    observation. Isolates *passive retention of one bit over a delay*: the cue is needed
    ``length + 1`` steps later and nothing in between helps. After Bakker (2001) and the passive
    T-Maze of Ni et al. (2023), "When do transformers shine in RL?".

    ## Action Space

    ``Discrete(3)``: 0 forward (east), 1 turn up, 2 turn down. Turning in the corridor and
    forward at the junction bump into a wall (the agent stays).

    ## Observation Space

    ``Box(0, 1, (3,), float32)``: ``[cue up, cue down, at junction]``. The cue entries are set at
    the first step only; afterwards the observation is ``[0, 0, 0]`` in the corridor and
    ``[0, 0, 1]`` at the junction.

    ## Rewards

    +1 for turning to the cued side at the junction, -1 for the other side, -1 when the time
    budget runs out first, and ``-1 / (length + 1)`` for every bump (a dense signal to walk).
    Optimal return 1 (walk ``length`` steps, turn). Best memoryless return 0: at the junction
    the observation is the same for both cues, and every way of spending time to encode the cue
    costs as much as it gains (a timeout scores -1, like a wrong turn).

    ## Starting State

    Cell 0; the cued side is up or down with probability 1/2.

    ## Episode End

    Terminated when the agent turns at the junction or when ``time_budget`` steps have passed
    (a failure, -1). Never truncated by the env itself.

    ## Arguments

    - ``length`` (20): corridor length, the memory delay (the cue is needed ``length + 1``
      steps after it was shown).
    - ``time_budget`` (``2 * (length + 1)``): steps before the episode fails.

    ## Rendering

    ``render_mode="rgb_array"``: the maze from above, ``[48, 16 * (length + 1), 3]`` uint8. The
    corridor is the middle row; the yellow lamp above or below the start is the cue (lit at
    the first step only, as the agent sees it); the cued arm is green, the other red; the agent
    is a blue disc.

    ## Info

    ``info["memory_target"]``: the cued side, 0 up or 1 down (``goal - 1``);
    ``info["memory_age"]``: steps since the cue was shown, the elapsed steps (0 at the first
    observation). See :mod:`envs.core` for which observation they describe.

    ## Version History

    - v0: initial version.
    """

    task_class = TMaze
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}


class TMazeVectorEnv(TaskVectorEnv):
    """``N`` passive T-mazes stepped together (see :class:`TMazeEnv`); SAME_STEP autoreset."""

    task_class = TMaze
