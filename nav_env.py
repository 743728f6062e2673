"""2D navigation with obstacles: the task family of Duan & Wang, "Towards Training Effectiveness in
Gradient-Based Meta-RL" (AAAI-22 student abstract; code: github.com/duanwenbo/aaai22). `NavigationEnv`
(gymnasium.Env) specifies it; `NavigationVectorEnv` steps any number of envs as numpy arrays with the same code
(a batch of one is the single env), so the two agree exactly; `render_trajectories` draws the map and paths.

Every position the agent can reach and every goal lies on the 0.1 grid, so the state is kept in integer cells
(0..100 per axis). The geometry is exact, with no drifting float sums, and collisions are a precomputed table,
`collision_table`: for each cell and action, is the move free, blocked by the map's edge, or by an obstacle? It is
the env's whole transition model, for a planner to use (as FrozenLake's `P`). collision="original" is the papers'
code itself (`NavigationPro`), whose float positions drift off the grid and whose borderline decisions (a diagonal
neighbour of the goal, landing on a segment's end) depend on that drift: that mode keeps float positions and
repeats the original's computations in the same order (`_OriginalNavigationBatch`).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Mapping, Sequence

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

# --- constants of the task family -----------------------------------------------------------------
MAP_SIZE = 10.0
CELLS_PER_UNIT = 10  # the move length is 0.1, so one move = one cell along each moved axis
GRID_MAX = int(MAP_SIZE * CELLS_PER_UNIT)  # cells are 0..GRID_MAX on each axis
START = (9.9, 9.9)
START_CELL = (99, 99)
MAX_EPISODE_STEPS = 100
# distance <= sqrt(0.02) <=> dx^2 + dy^2 <= 2 in cells^2 (exact in integers; sqrt(0.02) is not in floats)
GOAL_RADIUS = float(np.sqrt(0.02))
GOAL_RADIUS_SQ_CELLS = 2

ACTION_NAMES = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
# (dx, dy) in cells per action, same order as the original code's action_dict
ACTION_DELTAS = np.array([(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)], dtype=np.int64)

# Obstacle segments ((x0, y0), (x1, y1)) in map units, from the paper's supplementary material.
_EASY = (((5.0, 7.0), (5.0, 3.0)),)
_MEDIUM = _EASY + (((3.0, 5.0), (7.0, 5.0)),)
_HARD = (((1.5, 5.5), (4.5, 5.5)), ((5.5, 5.5), (8.5, 5.5)), ((1.5, 4.5), (4.5, 4.5)), ((5.5, 4.5), (8.5, 4.5)),
         ((4.5, 5.5), (4.5, 8.5)), ((5.5, 5.5), (5.5, 8.5)), ((4.5, 4.5), (4.5, 1.5)), ((5.5, 4.5), (5.5, 1.5)))
OBSTACLES: dict[str, tuple] = {"none": (), "easy": _EASY, "medium": _MEDIUM, "hard": _HARD}
TARGETS = ("uniform", "random", "narrow")
COLLISIONS = ("block", "stick", "original")

# collision="original": the constants of the papers' code.
ORIGINAL_OFF_MAP_REWARD = -800.0  # reward of every step that ends outside [0, 10]^2 (there are no walls)
ORIGINAL_GOAL_DISTANCE_SQ = 0.02  # done when the float squared distance to the goal is <= this
ORIGINAL_CONTACT_DISTANCE = 0.02  # contact: within this distance of a segment's line, between its ends
# The 99 moves from (9.9, 9.9) stay within [0, 19.8] per axis; one move of slack covers the float drift.
ORIGINAL_POSITION_BOUNDS = (-0.1, 19.9)
_ORIGINAL_CELL_RANGE = (-1, 199)  # the cells of those bounds
# Each action's (dx, dy) as the original adds them: 0 or +-0.1 in float64.
_ORIGINAL_MOVES = ACTION_DELTAS / CELLS_PER_UNIT

# Quadrants as (x_low, x_high, y_low, y_high), in the original sampler's order: Q1, Q2, Q3, Q4.
QUADRANTS = ((5.0, 10.0, 5.0, 10.0), (0.0, 5.0, 5.0, 10.0), (0.0, 5.0, 0.0, 5.0), (5.0, 10.0, 0.0, 5.0))
# Which quadrants each distribution cycles through, one per task in turn ("random" uses the whole map).
# "narrow" starts in Q3 and alternates with Q2, as the original does.
_TARGET_QUADRANTS = {"uniform": (0, 1, 2, 3), "narrow": (2, 1), "random": None}

# Codes of the collision table.
FREE, WALL, OBSTACLE = 0, 1, 2

# Exact float32 coordinates of the cells, so observations are the same however they are built.
_CELL_COORD = (np.arange(GRID_MAX + 1, dtype=np.float64) / CELLS_PER_UNIT).astype(np.float32)

def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")

# --- geometry --------------------------------------------------------------------------------------
def segments_intersect(p0, p1, q0, q1) -> np.ndarray:
    """Whether closed segment p0-p1 meets closed segment q0-q1 (touching counts); points are arrays whose last axis
    is (x, y), broadcast. The classic orientation test: the segments meet iff each one's endpoints are not strictly
    on the same side of the other's line, except when all four points are collinear, where they meet iff their
    extents overlap. Exact for integer inputs; a degenerate segment (a point) tests "point on segment"."""
    p0, p1, q0, q1 = (np.asarray(v) for v in (p0, p1, q0, q1))
    def orientation(a, b, c):  # sign of the cross product (b - a) x (c - a)
        ab, ac = b - a, c - a
        return np.sign(ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0])

    o1, o2 = orientation(p0, p1, q0), orientation(p0, p1, q1)
    o3, o4 = orientation(q0, q1, p0), orientation(q0, q1, p1)
    proper_or_touching = (o1 * o2 <= 0) & (o3 * o4 <= 0)
    collinear = (o1 == 0) & (o2 == 0) & (o3 == 0) & (o4 == 0)
    extents_overlap = np.ones(collinear.shape, dtype=bool)
    for axis in (0, 1):
        extents_overlap &= np.maximum(p0[..., axis], p1[..., axis]) >= np.minimum(q0[..., axis], q1[..., axis])
        extents_overlap &= np.maximum(q0[..., axis], q1[..., axis]) >= np.minimum(p0[..., axis], p1[..., axis])
    return np.where(collinear, extents_overlap, proper_or_touching)

def _segments(obstacles: str) -> np.ndarray:
    """Obstacle segments of a level as a float array (num_segments, 2 endpoints, 2) in map units."""
    return np.array(OBSTACLES[obstacles], dtype=np.float64).reshape(-1, 2, 2)

def _segments_in_cells(obstacles: str) -> np.ndarray:
    """Obstacle segments of a level as an int array (num_segments, 2 endpoints, 2) in grid cells."""
    return np.rint(_segments(obstacles) * CELLS_PER_UNIT).astype(np.int64)

@functools.lru_cache(maxsize=None)
def collision_table(obstacles: str) -> np.ndarray:
    """uint8 table (101, 101, 8): FREE, WALL or OBSTACLE for the move of each action from each cell.

    A move is blocked by the map edge if it would end outside [0, 10]^2, and by an obstacle if its
    path (the segment from the cell to the target cell) crosses or touches any obstacle segment.
    """
    _check_choice("obstacle level", obstacles, tuple(OBSTACLES))
    cells = np.stack(np.meshgrid(np.arange(GRID_MAX + 1), np.arange(GRID_MAX + 1), indexing="ij"), -1)
    origins = cells[:, :, None, :]  # (101, 101, 1, 2)
    targets = origins + ACTION_DELTAS  # (101, 101, 8, 2)
    table = np.full(targets.shape[:3], FREE, dtype=np.uint8)
    segments = _segments_in_cells(obstacles)
    if len(segments):
        hits = segments_intersect(origins[..., None, :], targets[..., None, :], segments[:, 0], segments[:, 1])
        table[hits.any(-1)] = OBSTACLE
    off_map = ((targets < 0) | (targets > GRID_MAX)).any(-1)
    table[off_map] = WALL
    table.flags.writeable = False
    return table

def _on_obstacle(goal_cells: np.ndarray, obstacles: str | Sequence[str]) -> np.ndarray:
    """Which goals (cells, shape (n, 2)) lie on an obstacle segment of the given level(s)."""
    levels = [obstacles] if isinstance(obstacles, str) else obstacles
    segments = np.concatenate([_segments_in_cells(level) for level in levels]).reshape(-1, 2, 2)
    if len(segments) == 0:
        return np.zeros(len(goal_cells), dtype=bool)
    g = goal_cells[:, None, :]
    return segments_intersect(g, g, segments[:, 0], segments[:, 1]).any(-1)

# --- tasks -----------------------------------------------------------------------------------------
def _draw_goal_cells(targets: str, n: int, rng: np.random.Generator, first_task: int) -> np.ndarray:
    quadrant_cycle = _TARGET_QUADRANTS[targets]
    if quadrant_cycle is None:
        bounds = np.tile(np.array([0.0, MAP_SIZE, 0.0, MAP_SIZE]), (n, 1))
    else:
        order = [quadrant_cycle[(first_task + i) % len(quadrant_cycle)] for i in range(n)]
        bounds = np.array([QUADRANTS[q] for q in order]).reshape(n, 4)
    xy = rng.uniform(bounds[:, [0, 2]], bounds[:, [1, 3]])
    return np.rint(xy * CELLS_PER_UNIT).astype(np.int64)  # round to 0.1, as the original does

def sample_goals(targets: str, n: int, rng: np.random.Generator, first_task: int = 0) -> np.ndarray:
    """Draw n goals (tasks), an array (n, 2) in map units rounded to 0.1. "uniform" cycles through the four
    quadrants, task i in quadrant (first_task + i) % 4 (Q1 = upper right, then counter-clockwise); "narrow"
    alternates between the two left quadrants (x < 5, starting with the lower one); "random" is uniform over the
    whole map. Goals that would lie on an obstacle segment of ANY level are redrawn, so a seed gives the same tasks
    on every obstacle level (which makes comparisons across levels paired)."""
    _check_choice("target distribution", targets, TARGETS)
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"number of goals must be a non-negative integer, got {n!r}")
    cells = _draw_goal_cells(targets, n, rng, first_task)
    all_levels = tuple(OBSTACLES)
    bad = _on_obstacle(cells, all_levels)
    while bad.any():  # rejection sampling; the segments cover < 2% of the grid, so this ends fast
        redraw = np.flatnonzero(bad)
        for i in redraw:  # each redrawn goal keeps its own place in the quadrant cycle
            cells[i] = _draw_goal_cells(targets, 1, rng, first_task + i)[0]
        bad[redraw] = _on_obstacle(cells[redraw], all_levels)
    return cells / CELLS_PER_UNIT

def _format_point(point) -> str:
    return "(" + ", ".join(f"{float(c):g}" for c in point) + ")"

def _goals_to_cells(goals, n: int, obstacles: str) -> np.ndarray:
    """Validate goals given by a user (array-like (n, 2), map units) and turn them into cells."""
    goals_array = np.asarray(goals, dtype=np.float64)
    if goals_array.shape != (n, 2):
        raise ValueError(f"goals must have shape ({n}, 2), got shape {goals_array.shape}")
    if not np.isfinite(goals_array).all():
        bad = goals_array[~np.isfinite(goals_array).all(1)][0]
        raise ValueError(f"goals must be finite numbers, got {_format_point(bad)}")
    outside = ((goals_array < 0) | (goals_array > MAP_SIZE)).any(1)
    if outside.any():
        raise ValueError(f"goal {_format_point(goals_array[outside][0])} is outside the map; allowed: x, y in [0, 10]")
    cells = np.rint(goals_array * CELLS_PER_UNIT).astype(np.int64)
    on_obstacle = _on_obstacle(cells, obstacles)
    if on_obstacle.any():
        raise ValueError(f"goal {_format_point(cells[on_obstacle][0] / CELLS_PER_UNIT)} lies on an obstacle of level "
                         f"{obstacles!r}; allowed: free points of the map")
    return cells

# --- shared dynamics -------------------------------------------------------------------------------
class _NavigationBatch:
    """State and dynamics of a batch of navigation envs on the grid, as integer arrays (collision "block"
    and "stick"). Used by both env classes; `_OriginalNavigationBatch` replaces the dynamics."""

    def __init__(self, num_envs: int, obstacles: str, see_goal: bool, collision: str):
        _check_choice("obstacle level", obstacles, tuple(OBSTACLES))
        _check_choice("collision mode", collision, COLLISIONS)
        self.num_envs, self.obstacles, self.see_goal, self.collision = num_envs, obstacles, see_goal, collision
        # Flat table indexed by (x * 101 + y) * 8 + action: one gather per step.
        self.table = collision_table(obstacles).reshape(-1)
        self.position = np.zeros((num_envs, 2), dtype=np.int64)
        self.goal = np.zeros((num_envs, 2), dtype=np.int64)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)
        self.frozen = np.zeros(num_envs, dtype=bool)  # collision="stick": touched an obstacle
        self.terminated = np.zeros(num_envs, dtype=bool)
        self.truncated = np.zeros(num_envs, dtype=bool)
    def reset(self, mask: np.ndarray | slice = slice(None)) -> None:
        self.position[mask] = START_CELL
        self.elapsed[mask] = 0
        self.frozen[mask] = False
        self.terminated[mask] = False
        self.truncated[mask] = False
    def observation(self) -> np.ndarray:
        columns = (self.position, self.goal) if self.see_goal else (self.position,)
        return _CELL_COORD[np.concatenate(columns, axis=1)]
    def positions(self) -> np.ndarray:  # (num_envs, 2) in map units
        return self.position / CELLS_PER_UNIT
    def distance_sq_cells(self) -> np.ndarray:
        offset = self.position - self.goal
        return offset[:, 0] * offset[:, 0] + offset[:, 1] * offset[:, 1]  # a third of .sum(1)'s time at 160 envs
    def distances(self) -> np.ndarray:  # each env's Euclidean distance to its goal, in map units
        return np.sqrt(self.distance_sq_cells()) / CELLS_PER_UNIT
    def step(self, actions: np.ndarray, hold: np.ndarray | None = None) -> np.ndarray:
        """Move every env that has not ended; return the rewards. Ended envs stay put with reward 0,
        and so do the envs in `hold` (just autoreset: their action is ignored)."""
        running = ~(self.terminated | self.truncated)
        if hold is not None:
            running &= ~hold
        code = self.table[(self.position[:, 0] * (GRID_MAX + 1) + self.position[:, 1]) * 8 + actions]
        moves = running & (code == FREE) & ~self.frozen
        if self.collision == "stick":  # frozen for the rest of the episode
            self.frozen |= running & (code == OBSTACLE)
        self.position += ACTION_DELTAS[actions] * moves[:, None]
        self.elapsed += running
        distance_sq = self.distance_sq_cells()
        reached = running & (distance_sq <= GOAL_RADIUS_SQ_CELLS)
        self.terminated |= reached
        self.truncated |= running & ~reached & (self.elapsed >= MAX_EPISODE_STEPS)
        return np.where(running & ~reached, -distance_sq / CELLS_PER_UNIT**2, 0.0)

class _OriginalNavigationBatch(_NavigationBatch):
    """collision="original": the step of the papers' `NavigationPro`, batched, in its float64 arithmetic. Per env
    the original keeps a float position, the position before the last move, a contact flag ("adsorption"), and the
    last reward and squared distance, which it does not recompute after a contact or on the 100th step. Every
    expression below is evaluated in the original's order, so the float results, and with them the borderline
    decisions, are the same bit for bit."""

    def __init__(self, num_envs: int, obstacles: str, see_goal: bool, collision: str):
        super().__init__(num_envs, obstacles, see_goal, collision)
        self.point = np.zeros((num_envs, 2))
        self.previous_point = np.zeros((num_envs, 2))
        self.goal_point = np.zeros((num_envs, 2))
        self.in_contact = np.zeros(num_envs, dtype=bool)
        self.last_reward = np.zeros(num_envs)
        self.last_distance_sq = np.zeros(num_envs)
        segments = _segments(obstacles)
        self.segment_a, self.segment_b = segments[:, 0], segments[:, 1]
        ab = self.segment_a - self.segment_b
        self.segment_length = np.sqrt(ab[:, 0] * ab[:, 0] + ab[:, 1] * ab[:, 1])  # np.linalg.norm
        self.contact_candidates = _contact_candidates(obstacles)
    def reset(self, mask: np.ndarray | slice = slice(None)) -> None:
        super().reset(mask)
        self.point[mask] = START
        self.goal_point[mask] = self.goal[mask] / CELLS_PER_UNIT
        self.in_contact[mask] = False
        self.last_reward[mask] = 0.0
        self.last_distance_sq[mask] = 0.0
    def observation(self) -> np.ndarray:
        return np.concatenate((self.point, self.goal_point), axis=1) if self.see_goal else self.point.copy()
    def positions(self) -> np.ndarray:
        return self.point.copy()
    def distances(self) -> np.ndarray:
        offset = self.point - self.goal_point
        return np.sqrt((offset * offset).sum(1))
    def touches_obstacle(self, points: np.ndarray) -> np.ndarray:
        """The original's contact test for points (n, 2): within 0.02 of some segment's line and
        strictly between its ends by the law of cosines (the product of the two cosines > 0; a point
        exactly on an end gives 0/0 there, which is not > 0)."""
        if len(self.segment_length) == 0:
            return np.zeros(len(points), dtype=bool)
        to_a = self.segment_a - points[:, None, :]  # (n, segments, 2)
        to_b = self.segment_b - points[:, None, :]
        cross = to_a[..., 0] * to_b[..., 1] - to_a[..., 1] * to_b[..., 0]  # np.cross of 2-vectors
        line_distance = np.abs(cross) / self.segment_length
        length_a = np.sqrt(to_a[..., 0] * to_a[..., 0] + to_a[..., 1] * to_a[..., 1])
        length_b = np.sqrt(to_b[..., 0] * to_b[..., 0] + to_b[..., 1] * to_b[..., 1])
        base_sq, a_sq, b_sq = _pow2(self.segment_length), _pow2(length_a), _pow2(length_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            cos_a = (base_sq + a_sq - b_sq) / (2 * self.segment_length * length_a)
            cos_b = (base_sq + b_sq - a_sq) / (2 * self.segment_length * length_b)
        return ((line_distance <= ORIGINAL_CONTACT_DISTANCE) & (cos_a * cos_b > 0)).any(1)
    def step(self, actions: np.ndarray, hold: np.ndarray | None = None) -> np.ndarray:
        running = ~(self.terminated | self.truncated)
        if hold is not None:
            running &= ~hold
        self.elapsed += running
        last = running & (self.elapsed >= MAX_EPISODE_STEPS)  # the 100th step makes no move
        acting = running & ~last
        moving = acting & ~self.in_contact
        returning = acting & self.in_contact  # after a contact: back to the point before it
        np.copyto(self.point, self.previous_point, where=returning[:, None])
        np.copyto(self.previous_point, self.point, where=moving[:, None])
        self.point += _ORIGINAL_MOVES[actions] * moving[:, None]  # + 0.0 leaves the others exactly as they are
        offset_sq = _pow2(self.point - self.goal_point)
        distance_sq = offset_sq[:, 0] + offset_sq[:, 1]
        np.copyto(self.last_distance_sq, distance_sq, where=moving)
        np.copyto(self.last_reward, -distance_sq, where=moving)
        # The float contact test runs only where the nearest cell is near a segment (a cheap exact filter).
        cell = np.rint(self.point * CELLS_PER_UNIT).astype(np.int64)
        np.clip(cell, *_ORIGINAL_CELL_RANGE, out=cell)
        near = self.contact_candidates[cell[:, 0] - _ORIGINAL_CELL_RANGE[0], cell[:, 1] - _ORIGINAL_CELL_RANGE[0]]
        candidates = np.flatnonzero(moving & near)
        if len(candidates):
            self.in_contact[candidates] = self.touches_obstacle(self.point[candidates])
        reached = running & (self.last_distance_sq <= ORIGINAL_GOAL_DISTANCE_SQ)
        self.last_reward[reached] = 0.0
        off_map = running & ((self.point < 0) | (self.point > MAP_SIZE)).any(1)
        self.last_reward[off_map] = ORIGINAL_OFF_MAP_REWARD  # kept, so a later repeat repeats it
        self.terminated |= reached
        self.truncated |= last & ~reached
        return np.where(running, self.last_reward, 0.0)

@functools.lru_cache(maxsize=None)
def _contact_candidates(obstacles: str) -> np.ndarray:
    """bool table over the cells of _ORIGINAL_CELL_RANGE (both axes): is the cell's point within the
    contact distance of some segment of the level, plus a margin far above the float drift of the
    positions (~1e-13)? Only a point whose nearest cell is marked can pass the original's contact test."""
    cells = np.arange(_ORIGINAL_CELL_RANGE[0], _ORIGINAL_CELL_RANGE[1] + 1) / CELLS_PER_UNIT
    points = np.stack(np.meshgrid(cells, cells, indexing="ij"), -1)[:, :, None, :]  # (n, n, 1, 2)
    segments = _segments(obstacles)
    if len(segments) == 0:
        return np.zeros(points.shape[:2], dtype=bool)
    a, direction = segments[:, 0], segments[:, 1] - segments[:, 0]
    along = ((points - a) * direction).sum(-1) / (direction * direction).sum(-1)
    nearest = a + np.clip(along, 0.0, 1.0)[..., None] * direction  # closest point of each closed segment
    distance = np.sqrt(((points - nearest) ** 2).sum(-1)).min(-1)
    table = distance <= ORIGINAL_CONTACT_DISTANCE + 1e-6
    table.flags.writeable = False
    return table

def _pow2(values: np.ndarray) -> np.ndarray:
    """values ** 2 as the original computes it on Python floats: C's pow(x, 2.0), math.pow value by value.
    `x * x` differs from pow in the last bit for about 1 value in 1,000, and `np.power` runs SIMD kernels of its
    own where the CPU has them (AVX-512), which differ for about 1 value in 40."""
    flat = np.asarray(values, dtype=np.float64).ravel().tolist()
    return np.fromiter(map(math.pow, flat, itertools.repeat(2.0)), np.float64, len(flat)).reshape(np.shape(values))

def _make_batch(num_envs: int, obstacles: str, see_goal: bool, collision: str) -> _NavigationBatch:
    _check_choice("collision mode", collision, COLLISIONS)
    batch_class = _OriginalNavigationBatch if collision == "original" else _NavigationBatch
    return batch_class(num_envs, obstacles, see_goal, collision)

def _observation_space(see_goal: bool, collision: str) -> spaces.Box:
    """Box of the observation (x, y[, gx, gy]): float32 on the map, or in collision="original" the
    original's float64 values, whose positions can leave the map."""
    if collision != "original":
        return spaces.Box(0.0, MAP_SIZE, shape=(4 if see_goal else 2,), dtype=np.float32)
    low, high = [ORIGINAL_POSITION_BOUNDS[0]] * 2, [ORIGINAL_POSITION_BOUNDS[1]] * 2
    if see_goal:
        low, high = low + [0.0, 0.0], high + [MAP_SIZE, MAP_SIZE]
    return spaces.Box(np.array(low), np.array(high), dtype=np.float64)

def _check_actions(actions: np.ndarray, num_envs: int) -> np.ndarray:
    actions = np.asarray(actions)
    if actions.shape != (num_envs,) or actions.dtype.kind not in "iu":  # signed or unsigned integers
        raise ValueError(f"actions must be integers of shape ({num_envs},), got {actions.dtype} {actions.shape}")
    if ((actions < 0) | (actions >= len(ACTION_NAMES))).any():
        bad = actions[(actions < 0) | (actions >= len(ACTION_NAMES))][0]
        raise ValueError(f"action {bad} out of range; allowed: 0..7 ({', '.join(ACTION_NAMES)})")
    return actions.astype(np.int64, copy=False)

# --- the environments ------------------------------------------------------------------------------
class _NavigationTasks:
    """The meta-RL task convention of learn2learn's MetaEnv, garage, ProMP and RLlib's TaskSettableEnv:
    `sample_tasks(n)`, `set_task(task)`, `get_task()`. A task is a dict {"goal": np.ndarray (2,)} in map
    units (on the 0.1 grid). A set task stays set across resets and autoresets until it is set again;
    `reset(options=...)` with a goal still overrides it for that reset's episode."""

    _tasks_drawn = 0  # position in the target distribution's quadrant cycle
    _task_goal_cells: np.ndarray | None = None  # (num_envs, 2): the set tasks' goals, or None
    def sample_tasks(self, num_tasks: int) -> list[dict[str, np.ndarray]]:
        """Draw num_tasks tasks from the target distribution with this env's generator (`np_random`)."""
        goals = sample_goals(self.targets, num_tasks, self.np_random, first_task=self._tasks_drawn)
        self._tasks_drawn += num_tasks
        return [{"goal": goal} for goal in goals]
    def _set_tasks(self, tasks: Sequence[Any]) -> None:
        for task in tasks:
            if not isinstance(task, Mapping) or "goal" not in task:
                raise ValueError(f"a navigation task is a dict {{'goal': (x, y)}}, got {task!r}")
        self._task_goal_cells = _goals_to_cells([task["goal"] for task in tasks], len(tasks), self.obstacles)
    def _get_tasks(self) -> list[dict[str, np.ndarray]]:
        cells = self._batch.goal if self._task_goal_cells is None else self._task_goal_cells
        return [{"goal": goal / CELLS_PER_UNIT} for goal in cells]

class NavigationEnv(_NavigationTasks, gymnasium.Env):
    """2D navigation with obstacles (Duan & Wang, AAAI-22 student abstract), one task at a time.

    ## Description
    A point agent starts at (9.9, 9.9), the upper right corner of the map [0, 10] x [0, 10], and has 100 moves
    of 0.1 to reach a goal; line-segment obstacles (four levels) lie between the start and many goals. A task is
    a goal: meta-RL adapts a policy to a new goal from a few episodes.

    ## Action Space
    `Discrete(8)`: 0 N, 1 NE, 2 E, 3 SE, 4 S, 5 SW, 6 W, 7 NW; each moves 0.1 along the axes it names.

    ## Observation Space
    `Box(0, 10, (4,), float32)`: the position x, y and the goal gx, gy; `(2,)`, the position only, with
    `see_goal=False`. With `collision="original"` the values are the original's float64 and positions can leave
    the map: x, y in [-0.1, 19.9] (the 99 moves from the start reach [0, 19.8]).

    ## Rewards
    -((x - gx)^2 + (y - gy)^2) after each move; 0 on the move that reaches the goal. With
    `collision="original"`: -800 for every step that ends outside the map.

    ## Starting State
    (9.9, 9.9). The goal is given in `options`, set by `set_task`, or drawn from `targets`.

    ## Episode End
    Terminated when the agent comes within sqrt(0.02) of the goal (on the grid: a cell at squared distance
    <= 2 cells^2; `collision="original"`: the float squared distance <= 0.02). Truncated after 100 steps.

    ## Arguments
    - `obstacles`: "none", "easy", "medium" (default) or "hard", the levels of the papers (`OBSTACLES`).
    - `targets`: "uniform" (default), "random" or "narrow" (see `sample_goals`).
    - `see_goal`: include the goal in the observation (default True, the papers' baseline).
    - `collision`: "block" (default): a move that would leave the map or cross or touch an obstacle is
      cancelled; "stick": the same grid, but touching an obstacle freezes the agent where it is for the rest
      of the episode (a grid-exact reading of the papers' "sticky" obstacles, not their code); "original":
      the papers' code step for step: no walls, 99 moves and a 100th step that repeats the last reward, the
      goal test on the float squared distance, and its contact rule (move onto the obstacle, then back to the
      point before it for the rest of the episode).
    - `render_mode`: None or "rgb_array" (`render_trajectories` of the episode so far).

    ## Reset Options
    - `"goal"`: (x, y), the goal of this episode (rounded to the 0.1 grid; not on an obstacle).

    ## Tasks
    A task is a goal, {"goal": np.ndarray (2,)}. `sample_tasks(n)` draws n from `targets`; after
    `set_task(task)` every reset uses its goal until the next `set_task`; `get_task()` returns the set task, or
    the current episode's goal while none is set (learn2learn's MetaEnv convention).

    ## Info
    `info["distance"]`: the Euclidean distance from the position to the goal.

    ## Version History
    - v0: the task family of Duan & Wang's code (duanwenbo/aaai22), with three collision modes.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    def __init__(self, obstacles: str = "medium", targets: str = "uniform", see_goal: bool = True,
                 collision: str = "block", render_mode: str | None = None):
        _check_choice("target distribution", targets, TARGETS)
        if render_mode is not None:
            _check_choice("render mode", render_mode, self.metadata["render_modes"])
        self.obstacles, self.targets, self.see_goal, self.collision = obstacles, targets, see_goal, collision
        self.render_mode = render_mode
        self._batch = _make_batch(1, obstacles, see_goal, collision)
        self.observation_space = _observation_space(see_goal, collision)
        self.action_space = spaces.Discrete(len(ACTION_NAMES))
        self._tasks_drawn = 0  # position in the target distribution's quadrant cycle
        self._trajectory: list[np.ndarray] = []
    @property
    def goal(self) -> np.ndarray:
        return self._batch.goal[0] / CELLS_PER_UNIT
    @property
    def position(self) -> np.ndarray:
        return self._batch.positions()[0]
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._tasks_drawn = 0  # the same seed gives the same sequence of tasks
        options = options or {}
        if options.get("goal") is not None:
            self._batch.goal[:] = _goals_to_cells([options["goal"]], 1, self.obstacles)
        elif self._task_goal_cells is not None:
            self._batch.goal[:] = self._task_goal_cells
        else:
            goal = sample_goals(self.targets, 1, self.np_random, first_task=self._tasks_drawn)
            self._batch.goal[:] = np.rint(goal * CELLS_PER_UNIT)
            self._tasks_drawn += 1
        self._batch.reset()
        self._trajectory = [self.position]
        return self._batch.observation()[0], {"distance": float(self._batch.distances()[0])}
    def set_task(self, task: Mapping[str, Any]) -> None:
        """Use this task's goal from the next reset on (the current episode goes on unchanged)."""
        self._set_tasks([task])
    def get_task(self) -> dict[str, np.ndarray]:
        return self._get_tasks()[0]
    def step(self, action):
        reward = self._batch.step(_check_actions(np.asarray([action]), 1))[0]
        self._trajectory.append(self.position)
        terminated, truncated = bool(self._batch.terminated[0]), bool(self._batch.truncated[0])
        info = {"distance": float(self._batch.distances()[0])}
        return self._batch.observation()[0], float(reward), terminated, truncated, info
    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return render_trajectories([np.array(self._trajectory)], [self.goal], obstacles=self.obstacles)

class NavigationVectorEnv(_NavigationTasks, gymnasium.vector.VectorEnv):
    """num_envs navigation envs stepped together as numpy arrays (no Python loop over envs).

    ## Spaces, Rewards, Starting State, Episode End
    As NavigationEnv, per env: actions (num_envs,) in 0..7; observations (num_envs, 4) or (num_envs, 2); rewards,
    `terminated`, `truncated` and `info["distance"]` (num_envs,). A batch of one steps exactly as NavigationEnv.

    ## Arguments
    - `num_envs`: the number of envs (a positive integer).
    - `obstacles`, `targets`, `see_goal`, `collision`: as NavigationEnv.
    - `autoreset_mode`: NEXT_STEP (gymnasium's default: the step after an episode ends resets that env,
      with the same goal, and ignores its action) or DISABLED (an ended env stays put with reward 0 and
      its done flags set until `reset`; for fixed-horizon batched rollouts).

    ## Reset Options
    - `"goals"`: array (num_envs, 2), one goal per env. Without it a reset uses the tasks of `set_task`,
      else draws goals from the target distribution (env i gets task i of the quadrant cycle).
    - `"reset_mask"`: bool (num_envs,); only the envs where it is True restart.

    ## Tasks
    As NavigationEnv, with one task per env (a sequence of num_envs tasks) or one task for every env.
    Each env keeps its goal across its episodes (autoresets included) until the next `reset`.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
    def __init__(self, num_envs: int, obstacles: str = "medium", targets: str = "uniform", see_goal: bool = True,
                 collision: str = "block", autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        _check_choice("target distribution", targets, TARGETS)
        autoreset_mode = AutoresetMode(autoreset_mode) if isinstance(autoreset_mode, str) else autoreset_mode
        _check_choice("autoreset mode", autoreset_mode, (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED))
        self.num_envs, self.obstacles, self.targets = int(num_envs), obstacles, targets
        self.see_goal, self.collision = see_goal, collision
        self.metadata = {"autoreset_mode": autoreset_mode}
        self._batch = _make_batch(self.num_envs, obstacles, see_goal, collision)
        self.single_observation_space = _observation_space(see_goal, collision)
        self.single_action_space = spaces.Discrete(len(ACTION_NAMES))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
    @property
    def goals(self) -> np.ndarray:
        return self._batch.goal / CELLS_PER_UNIT
    @property
    def positions(self) -> np.ndarray:
        return self._batch.positions()
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._tasks_drawn = 0  # the same seed gives the same sequence of sampled tasks
        options = options or {}
        mask = np.ones(self.num_envs, dtype=bool)
        if options.get("reset_mask") is not None:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != bool:
                raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},), got {mask.shape}")
        if options.get("goals") is not None:
            goal_cells = _goals_to_cells(options["goals"], self.num_envs, self.obstacles)
        elif self._task_goal_cells is not None:
            goal_cells = self._task_goal_cells
        else:
            goal_cells = np.rint(sample_goals(self.targets, self.num_envs, self.np_random) * CELLS_PER_UNIT)
        self._batch.goal[mask] = goal_cells[mask]
        self._batch.reset(mask)
        return self._batch.observation(), {"distance": self._batch.distances()}
    def set_task(self, task: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """One task per env (a sequence of num_envs tasks), or one task for every env; used from the next
        reset on (episodes in progress go on unchanged; autoresets keep each env's goal anyway)."""
        tasks = [task] * self.num_envs if isinstance(task, Mapping) else list(task)
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_task takes one task or {self.num_envs} tasks (one per env), got {len(tasks)}")
        self._set_tasks(tasks)
    def get_task(self) -> list[dict[str, np.ndarray]]:
        """The set tasks, one per env, or each env's current goal while none is set."""
        return self._get_tasks()
    def get_state(self) -> dict[str, Any]:
        """The envs' state mid-episode, for a checkpoint: copies of every array a step reads or writes, and the
        generator's state. set_state(state) writes them back in place, so an env built with the same arguments
        continues the same episodes exactly."""
        arrays = {name: value.copy() for name, value in vars(self._batch).items()
                  if isinstance(value, np.ndarray) and value.flags.writeable}
        return {"arrays": arrays, "np_random": self.np_random.bit_generator.state}
    def set_state(self, state: Mapping[str, Any]) -> None:
        for name, value in state["arrays"].items():  # in place: some arrays are views of others
            getattr(self._batch, name)[...] = value
        self.np_random.bit_generator.state = state["np_random"]
    def step(self, actions):
        actions = _check_actions(actions, self.num_envs)
        autoreset = None
        if self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
            autoreset = self._batch.terminated | self._batch.truncated
            self._batch.reset(autoreset)  # these envs' actions are ignored, as gymnasium specifies
        rewards = self._batch.step(actions, hold=autoreset)
        terminated, truncated = self._batch.terminated.copy(), self._batch.truncated.copy()
        return self._batch.observation(), rewards, terminated, truncated, {"distance": self._batch.distances()}

# --- rendering -------------------------------------------------------------------------------------
# Colour-blind-friendly palette (Okabe-Ito) for trajectories.
_PALETTE = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
            (240, 228, 66), (0, 0, 0))

def render_layout(size: int) -> tuple[int, float]:
    """render_trajectories' layout of its size x size map: (margin in pixels, pixels per map unit). The map's point
    (x, y) is at pixel column margin + x * scale and row size - margin - y * scale (the y axis up)."""
    margin = max(8, size // 25)
    return margin, (size - 2 * margin) / MAP_SIZE

def render_trajectories(trajectories: Sequence[np.ndarray], goals: Sequence[Sequence[float]] | np.ndarray,
                        obstacles: str = "none", size: int = 400, colors: Sequence[tuple[int, int, int]] = _PALETTE,
                        title: str | None = None) -> np.ndarray:
    """Draw the map, an obstacle level, the start, goals and trajectories; return uint8 (size, size, 3).

    trajectories: positions (T_i, 2) in map units, one array per trajectory (may be empty); goals: (x, y) per
    goal. Trajectory i and goal i share colour i of `colors` (default: a colour-blind-friendly palette), so a
    figure of several tasks reads at a glance. The start is the green square, obstacles the dark lines, and the
    light grid has one line per map unit. Use e.g. `writer.add_image(tag, img, step, dataformats="HWC")`.
    """
    from PIL import Image, ImageDraw  # Pillow comes with TensorBoard; imported here to keep `import nav_env` light

    _check_choice("obstacle level", obstacles, tuple(OBSTACLES))
    margin, scale = render_layout(size)
    radius = max(3, size // 80)  # the start square's half side; goal discs are one pixel larger

    def to_pixels(points) -> list[tuple[float, float]]:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return [(margin + x * scale, size - margin - y * scale) for x, y in points]  # y axis points up

    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for k in range(1, int(MAP_SIZE)):  # light unit grid
        draw.line(to_pixels([[k, 0], [k, MAP_SIZE]]), fill=(235, 235, 235))
        draw.line(to_pixels([[0, k], [MAP_SIZE, k]]), fill=(235, 235, 235))
    draw.rectangle([*to_pixels([0, MAP_SIZE])[0], *to_pixels([MAP_SIZE, 0])[0]], outline=(0, 0, 0), width=2)
    for segment in OBSTACLES[obstacles]:
        draw.line(to_pixels(segment), fill=(60, 60, 60), width=max(3, size // 100))
    for i, trajectory in enumerate(trajectories):
        points = to_pixels(trajectory)
        if len(points) > 1:
            draw.line(points, fill=colors[i % len(colors)], width=max(2, size // 200), joint="curve")
    for i, goal in enumerate(goals):
        (x, y), r = to_pixels(goal)[0], radius + 1
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colors[i % len(colors)], outline=(0, 0, 0))
    (x, y), r = to_pixels(START)[0], radius
    draw.rectangle([x - r, y - r, x + r, y + r], fill=(0, 170, 0), outline=(0, 0, 0))
    if title:
        draw.text((margin, 1), title, fill=(0, 0, 0))
    return np.asarray(image)

gymnasium.register(id="Navigation-v0", entry_point="nav_env:NavigationEnv",
                   vector_entry_point="nav_env:NavigationVectorEnv")
