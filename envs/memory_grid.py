"""Memory grid: remember a cue object's colour, walk a corridor, touch the matching object."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .core import (
    EPISODE_STREAM,
    Task,
    TaskEnv,
    TaskVectorEnv,
    below,
    draw,
    grid_picture,
    paint_disc,
)

OUTSIDE, FLOOR, WALL, BALL = 0, 1, 2, 3  # object types
TYPE_LEVELS = np.array([0, 85, 170, 255], dtype=np.uint8)  # channel 0 value of each type
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])  # north, east, south, west: (row, col)
START, CUE = (2, 3), (2, 1)

# Picture colours (RGB): floor and wall by object type, ball colours 1, 2, ... (cycling), the
# agent, and the frame of its egocentric view.
TYPE_COLOURS = np.array([[0, 0, 0], [220, 220, 220], [70, 70, 70], [220, 220, 220]], np.uint8)
BALL_COLOURS = [(220, 50, 50), (50, 170, 50), (60, 90, 230), (230, 200, 40), (180, 60, 200)]
AGENT, VIEW_FRAME = (30, 30, 30), (250, 200, 40)


def _layout(length: int) -> np.ndarray:
    """Object types of the map ``[5, length + 6]``: room, corridor on row 2, junction column."""
    grid = np.full((5, length + 6), WALL, dtype=np.uint8)
    grid[1:4, 1:4] = FLOOR  # start room
    grid[2, 4 : 4 + length + 1] = FLOOR  # corridor and junction cell
    grid[CUE] = BALL
    grid[1, 4 + length] = grid[3, 4 + length] = BALL  # candidates, top and bottom
    return grid


def _colourings(num_colors: int) -> np.ndarray:
    """``[configs, 3]`` colours (1-based) of (cue, top, bottom) for every configuration.

    A configuration is (cue colour, other colour, matching side); side 0 = top.
    """
    rows = []
    for cue in range(1, num_colors + 1):
        for other in (c for c in range(1, num_colors + 1) if c != cue):
            rows += [(cue, cue, other), (cue, other, cue)]
    return np.array(rows, dtype=np.uint8)


class MemoryGrid(Task):
    """Batched memory grid (see :class:`MemoryGridEnv`)."""

    state_arrays = ("position", "config", "matching_side")

    def __init__(
        self,
        num_envs: int,
        length: int = 6,
        view: int = 5,
        num_colors: int = 2,
        time_budget: int | None = None,
    ) -> None:
        super().__init__(num_envs)
        half = view // 2
        if view < 3 or view % 2 == 0 or length < max(1, 2 * half - 2) or num_colors < 2:
            raise ValueError(
                f"MemoryGrid: need odd view >= 3, length >= max(1, view - 3) (so no cell sees "
                f"both cue and candidates), num_colors >= 2; got {view=}, {length=}, {num_colors=}"
            )
        self.length, self.view, self.num_colors = length, view, num_colors
        self.horizon = 8 * (length + 2) if time_budget is None else time_budget
        if self.horizon < 1:
            raise ValueError(f"MemoryGrid: time_budget must be >= 1, got {time_budget}")
        grid = _layout(length)
        cells = [tuple(c) for c in np.argwhere(grid == FLOOR)]  # walkable positions
        self._start = cells.index(START)
        self._next, self._touch = _transitions(grid, cells, length)
        self._grid, self._cells = grid, cells
        self._colourings = colourings = _colourings(num_colors)
        self._num_configs = len(colourings)
        self._views = _views(grid, cells, colourings, num_colors, view)  # (configs * P, v*v*2)
        self.observation_space = spaces.Box(0, 255, (view, view, 2), dtype=np.uint8)
        self.action_space = spaces.Discrete(4)
        self.num_positions = len(cells)
        self.position = np.zeros(num_envs, dtype=np.int64)  # index into cells
        self.config = np.zeros(num_envs, dtype=np.int64)  # index into colourings
        self.matching_side = np.zeros(num_envs, dtype=np.int64)  # 1 top, 2 bottom

    def new_episodes(self, rows: np.ndarray) -> None:
        self.position[rows] = self._start
        config = below(draw(self.episode_keys[rows], EPISODE_STREAM), self._num_configs)
        self.config[rows] = config
        self.matching_side[rows] = 1 + config % 2

    def observe(self, rows: np.ndarray) -> np.ndarray:
        return self._observe(self.config[rows], self.position[rows])

    def _observe(self, config: np.ndarray, position: np.ndarray) -> np.ndarray:
        flat = self._views.take(config * self.num_positions + position, axis=0)
        return flat.reshape(len(config), self.view, self.view, 2)

    def render(self, row: int, cell: int = 16) -> np.ndarray:
        """The whole map from above, ``[5 * cell, (length + 6) * cell, 3]``: walls, floor, the
        three balls in their colours, the agent a dark disc inside the yellow frame of what it
        sees."""
        image = grid_picture(TYPE_COLOURS[self._grid], cell)  # (H, W, 3)
        junction = self._grid.shape[1] - 2
        balls = [CUE, (1, junction), (3, junction)]
        for (r, c), colour in zip(balls, self._colourings[self.config[row]], strict=True):
            paint_disc(image, r, c, BALL_COLOURS[(int(colour) - 1) % len(BALL_COLOURS)], cell)
        r, c = self._cells[int(self.position[row])]
        paint_disc(image, r, c, AGENT, cell)
        half = self.view // 2
        top, left = max(0, (r - half) * cell), max(0, (c - half) * cell)
        bottom = min(image.shape[0], (r + half + 1) * cell) - 1
        right = min(image.shape[1], (c + half + 1) * cell) - 1
        image[[top, top + 1, bottom - 1, bottom], left : right + 1] = VIEW_FRAME
        image[top : bottom + 1, [left, left + 1, right - 1, right]] = VIEW_FRAME
        return image

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        move = self.position * 4 + actions
        touched = self._touch.take(move)  # 0 nothing, 1 top candidate, 2 bottom candidate
        self.position = self._next.take(move)
        self.elapsed += 1
        out_of_time = (self.elapsed >= self.horizon) & (touched == 0)
        reward = np.where(touched == self.matching_side, 1.0, -1.0)
        reward[(touched == 0) & ~out_of_time] = 0.0
        obs = self._observe(self.config, self.position)
        return obs, reward, (touched > 0) | out_of_time, np.zeros(self.num_envs, dtype=bool)


def _transitions(grid: np.ndarray, cells: list, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``next[P * 4]`` position after each (position, action) and ``touch[P * 4]``."""
    index = {cell: i for i, cell in enumerate(cells)}
    candidates = {(1, 4 + length): 1, (3, 4 + length): 2}
    nxt = np.zeros((len(cells), 4), dtype=np.int64)
    touch = np.zeros((len(cells), 4), dtype=np.int64)
    for i, (r, c) in enumerate(cells):
        for a, (dr, dc) in enumerate(MOVES):
            target = (r + dr, c + dc)
            nxt[i, a] = index.get(target, i)  # walls and balls block
            touch[i, a] = candidates.get(target, 0)
    return nxt.ravel(), touch.ravel()


def colour_level(colour: int, num_colors: int) -> int:
    """Channel-1 value of colour ``colour`` (1-based) among ``num_colors``; 0 for none."""
    return round(255 * int(colour) / num_colors)


def _views(
    grid: np.ndarray, cells: list, colourings: np.ndarray, num_colors: int, view: int
) -> np.ndarray:
    """Every egocentric view, ``[configs * P, view * view * 2]`` (config-major)."""
    half = view // 2
    junction = grid.shape[1] - 2
    ball_cells = [CUE, (1, junction), (3, junction)]
    out = np.zeros((len(colourings), len(cells), view, view, 2), dtype=np.uint8)
    for k, colours in enumerate(colourings):
        colour = np.zeros_like(grid)
        for cell, value in zip(ball_cells, colours, strict=True):
            colour[cell] = colour_level(value, num_colors)
        image = np.stack([TYPE_LEVELS[grid], colour], axis=-1)  # (H, W, 2)
        padded = np.pad(image, ((half, half), (half, half), (0, 0)))  # OUTSIDE = 0 beyond
        for p, (r, c) in enumerate(cells):
            out[k, p] = padded[r : r + view, c : c + view]
    return out.reshape(len(colourings) * len(cells), -1)


class MemoryGridEnv(TaskEnv):
    """Memory grid: a coloured cue in the start room, a corridor, two candidates at its end.

    ## Description

    A small gridworld seen through an egocentric ``view x view`` window centred on the agent.
    The start room holds a ball of the cue colour. A corridor of ``length`` cells leads to a
    junction with one ball above and one below: one has the cue colour, the other a different
    colour, on random sides. Touching (walking into) the ball that matches the cue ends the
    episode with +1, the other with -1. No cell sees both the cue and the candidates, so the
    cue colour must be remembered and compared with what is seen at the end: *memory of a
    visual feature across navigation*, with image observations (a CNN encoder is needed). After
    the MiniGrid/MiniWorld memory tasks.

    ## Action Space

    ``Discrete(4)``: move north, east, south, west. Walls and the cue ball block.

    ## Observation Space

    ``Box(0, 255, (view, view, 2), uint8)``, a MiniGrid-style symbolic image with the agent at
    the centre cell. Channel 0 is the object type, spread over the byte so that an image
    encoder's ``/ 255`` keeps types apart: 0 outside the map, 85 floor, 170 wall, 255 ball
    (``TYPE_LEVELS``). Channel 1 is the colour: 0 none, ``colour_level(c, num_colors)`` =
    ``round(255 * c / num_colors)`` for colour ``c`` in 1 to ``num_colors``.

    ## Rewards

    +1 for touching the matching ball, -1 for the other one or for running out of time, 0
    otherwise. Optimal return 1 (``length + 2`` steps). Best memoryless return 0: the junction
    view is the same for (cue red, match on top) and (cue green, match below), and a timeout
    scores -1, so holding back without the cue gains nothing.

    ## Starting State

    The room's east cell, at the corridor entrance, two cells from the cue; colours and
    sides uniformly random.

    ## Episode End

    Terminated on touching a ball or after ``time_budget`` steps (a failure, -1). Never
    truncated by the env itself.

    ## Arguments

    - ``length`` (6): corridor length, the memory delay; at least ``view - 3``.
    - ``view`` (5): side of the odd egocentric window.
    - ``num_colors`` (2): colours the cue can take.
    - ``time_budget`` (``8 * (length + 2)``): steps before the episode fails (a random policy
      reaches the junction in about 13% of episodes at the defaults).

    ## Rendering

    ``render_mode="rgb_array"``: the whole map from above, ``[80, 16 * (length + 6), 3]``
    uint8 (the observation is only the window framed in yellow): walls grey, floor light, the
    balls in their colours (1 red, 2 green, 3 blue, ...), the agent a dark disc.

    ## Info

    No ``memory_target``: the cue stays in view for as long as the walk keeps it there, so its
    age would need state of its own (``info`` is empty but for the autoreset entries). See
    :mod:`envs.core`.

    ## Version History

    - v0: initial version.
    """

    task_class = MemoryGrid
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}


class MemoryGridVectorEnv(TaskVectorEnv):
    """``N`` memory grids stepped together (see :class:`MemoryGridEnv`); SAME_STEP autoreset."""

    task_class = MemoryGrid
