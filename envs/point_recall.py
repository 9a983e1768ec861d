"""Point recall: see a 2-D goal once, then steer to it in the dark (continuous actions)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .core import EPISODE_STREAM, Task, TaskEnv, TaskVectorEnv, draw, uniform

MIN_RADIUS, MAX_RADIUS = 0.4, 0.9  # goal distance from the start, keeps 1 / d0 bounded
_QUADRANTS = np.array([0, 1, 3, 2])  # quadrant by (x < 0) + 2 * (y < 0), counter-clockwise
FLOOR, START, GOAL, AGENT = (235, 235, 235), (160, 160, 160), (80, 180, 80), (40, 90, 220)


class PointRecall(Task):
    """Batched point recall (see :class:`PointRecallEnv`)."""

    state_arrays = ("position", "goal", "distance", "start_distance")
    memory_classes = 4

    def __init__(
        self, num_envs: int, delay: int = 0, travel_steps: int = 12, max_speed: float = 0.1
    ) -> None:
        super().__init__(num_envs)
        if delay < 0 or max_speed <= 0 or travel_steps * max_speed < MAX_RADIUS - 1e-9:
            raise ValueError(
                f"PointRecall: need delay >= 0 and travel_steps * max_speed >= {MAX_RADIUS} (every "
                f"goal reachable), got {delay=}, {travel_steps=}, {max_speed=}"
            )
        self.delay, self.max_speed = delay, max_speed
        self.horizon = 1 + delay + travel_steps
        low = np.array([-1, -1, -1, -1, 0], dtype=np.float32)
        self.observation_space = spaces.Box(low, np.ones(5, np.float32), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.position = np.zeros((num_envs, 2))
        self.goal = np.zeros((num_envs, 2))
        self.distance = np.ones(num_envs)  # to the goal, now
        self.start_distance = np.ones(num_envs)

    def new_episodes(self, rows: np.ndarray) -> None:
        keys = self.episode_keys[rows]
        angle = 2 * np.pi * uniform(draw(keys, EPISODE_STREAM))
        radius = MIN_RADIUS + (MAX_RADIUS - MIN_RADIUS) * uniform(draw(keys, EPISODE_STREAM + 1))
        goal = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
        self.goal[rows] = goal
        self.position[rows] = 0.0
        self.distance[rows] = np.hypot(goal[:, 0], goal[:, 1])  # as step measures it
        self.start_distance[rows] = self.distance[rows]

    def observe(self, rows: np.ndarray) -> np.ndarray:
        obs = np.zeros((len(rows), 5), dtype=np.float32)  # first observation: start and goal
        obs[:, 2:4] = self.goal[rows]
        obs[:, 4] = 1.0
        return obs

    def memory(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The goal's quadrant, counter-clockwise from +x (0: x >= 0, y >= 0; 1: x < 0, y >= 0;
        2: x < 0, y < 0; 3: x >= 0, y < 0), shown at t = 0 only: its age is the elapsed steps."""
        negative = self.goal.take(rows, axis=0) < 0  # (n, 2): x < 0, y < 0
        return _QUADRANTS.take(negative[:, 0] + 2 * negative[:, 1]), self.elapsed[rows]

    def render(self, row: int, size: int = 160) -> np.ndarray:
        """The square [-1, 1]^2 from above, ``[size, size, 3]``, y up: the start grey, the goal
        green, the agent a blue disc."""
        image = np.full((size, size, 3), FLOOR, dtype=np.uint8)
        y, x = np.ogrid[:size, :size]
        points = [(np.zeros(2), START, 3), (self.goal[row], GOAL, 7)]
        points.append((self.position[row], AGENT, 5))
        for (px, py), colour, radius in points:
            centre_x, centre_y = (px + 1) / 2 * (size - 1), (1 - py) / 2 * (size - 1)
            image[(x - centre_x) ** 2 + (y - centre_y) ** 2 <= radius**2] = colour
        return image

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        moving = (self.elapsed > self.delay)[:, None]  # frozen while the goal is shown, and delay
        velocity = np.clip(actions, -1.0, 1.0) * (self.max_speed * moving)  # (N, 2)
        np.clip(self.position + velocity, -1.0, 1.0, out=self.position)
        offset = self.goal - self.position
        distance = np.hypot(offset[:, 0], offset[:, 1])
        reward = (self.distance - distance) / self.start_distance  # telescopes to 1 - d_T / d_0
        self.distance = distance
        self.elapsed += 1
        obs = np.zeros((self.num_envs, 5), dtype=np.float32)
        obs[:, :2] = self.position
        terminated = self.elapsed >= self.horizon
        return obs, reward, terminated, np.zeros_like(terminated)


class PointRecallEnv(TaskEnv):
    """Point recall: a 2-D goal shown at the first step, then reached in the dark.

    ## Description

    The agent starts at the origin of the square [-1, 1]^2 and sees a goal at distance 0.4 to
    0.9 (uniform angle and radius) in its first observation only. It cannot move while the goal
    is shown and for ``delay`` more steps; then it has ``travel_steps`` steps of velocity
    commands, seeing its own position but never the goal again. Tests *holding a continuous
    quantity* and using it for continuous control.

    ## Action Space

    ``Box(-1, 1, (2,), float32)``: velocity command; each component is clipped to [-1, 1] and
    scaled by ``max_speed``. Ignored while frozen.

    ## Observation Space

    ``Box([-1, -1, -1, -1, 0], 1, (5,), float32)``: ``[x, y, goal x, goal y, cue flag]``; the goal
    and the flag are zero after the first step.

    ## Rewards

    Progress toward the goal, normalised: ``(d_{t-1} - d_t) / d_0`` with ``d`` the distance to
    the goal, so the return is ``1 - d_final / d_0``. Optimal return 1 (steer straight, stop on
    the goal; every goal is within reach). Best memoryless return 0: after the first step a
    memoryless policy's path does not depend on the goal, and for goals symmetric about the
    origin the expected ``d_final / d_0`` is smallest (= 1) when staying at the origin.

    ## Starting State

    Position (0, 0); goal as above.

    ## Episode End

    Terminated after ``1 + delay + travel_steps`` steps.

    ## Arguments

    - ``delay`` (0): extra frozen steps after the cue, the memory-length knob.
    - ``travel_steps`` (12): steps to move; ``travel_steps * max_speed`` must reach 0.9.
    - ``max_speed`` (0.1): the largest step per axis.

    ## Rendering

    ``render_mode="rgb_array"``: the square from above, ``[160, 160, 3]`` uint8, y up: the
    start grey, the goal green (always drawn, though the agent sees it once), the agent blue.

    ## Info

    ``info["memory_target"]``: the goal's quadrant, counter-clockwise from +x (0: x >= 0,
    y >= 0; 1: x < 0, y >= 0; 2: x < 0, y < 0; 3: x >= 0, y < 0), a class id for a goal that
    is continuous. ``info["memory_age"]``: steps since the goal was shown, the elapsed steps (0
    at the first observation). See :mod:`envs.core`.

    ## Version History

    - v0: initial version.
    """

    task_class = PointRecall
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}


class PointRecallVectorEnv(TaskVectorEnv):
    """``N`` point-recall tasks stepped together (see :class:`PointRecallEnv`)."""

    task_class = PointRecall
