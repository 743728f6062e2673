"""Tests of nav_env: gymnasium conformance, exact geometry, hand-computed dynamics, single vs vector
agreement, seeding and bad input. The geometry oracle below is an independent exact implementation
(parametric intersection in rational arithmetic), not the env's orientation test. collision="original"
is checked against episodes recorded from the papers' own environment (../shared/nav/)."""

import itertools
import math
import pathlib
from fractions import Fraction

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

import nav_env
from nav_env import NavigationEnv, NavigationVectorEnv, sample_goals

N, NE, E, SE, S, SW, W, NW = range(8)


# --- independent geometry oracle --------------------------------------------------------------------


def _cross(a, b):
    return a[0] * b[1] - a[1] * b[0]


def oracle_intersect(p0, p1, q0, q1) -> bool:
    """Do closed segments p0p1 and q0q1 share a point? Solves p0 + s r = q0 + u w exactly."""
    p0, p1, q0, q1 = ([Fraction(c) for c in v] for v in (p0, p1, q0, q1))
    r = (p1[0] - p0[0], p1[1] - p0[1])
    w = (q1[0] - q0[0], q1[1] - q0[1])
    d = (q0[0] - p0[0], q0[1] - p0[1])
    denominator = _cross(r, w)
    if denominator != 0:
        s, u = _cross(d, w) / denominator, _cross(d, r) / denominator
        return 0 <= s <= 1 and 0 <= u <= 1
    if _cross(d, r) != 0 or _cross(d, w) != 0:  # parallel on different lines (or a point off the line)
        return False
    if r == (0, 0) and w == (0, 0):
        return p0 == q0
    # collinear: project everything on the longer direction and compare intervals
    axis = r if r != (0, 0) else w
    origin = p0

    def coordinate(point):
        return (point[0] - origin[0]) * axis[0] + (point[1] - origin[1]) * axis[1]

    a = sorted((coordinate(p0), coordinate(p1)))
    b = sorted((coordinate(q0), coordinate(q1)))
    return max(a[0], b[0]) <= min(a[1], b[1])


def oracle_blocked(level, start, end) -> bool:
    """Whether a move from `start` to `end` (map units) must be blocked: leaves the map or touches a segment."""
    if not all(0 <= c <= 10 for c in end):
        return True
    return any(oracle_intersect(start, end, a, b) for a, b in nav_env.OBSTACLES[level])


def cell_to_map(cell):
    return (Fraction(int(cell[0]), 10), Fraction(int(cell[1]), 10))


# --- gymnasium conformance --------------------------------------------------------------------------


@pytest.mark.parametrize("obstacles", list(nav_env.OBSTACLES))
@pytest.mark.parametrize("targets", nav_env.TARGETS)
def test_check_env_passes(obstacles, targets):
    env = gymnasium.make("nav_env:Navigation-v0", obstacles=obstacles, targets=targets, render_mode="rgb_array")
    check_env(env.unwrapped)


@pytest.mark.parametrize("see_goal", [True, False])
def test_check_env_passes_in_original_mode(see_goal):
    env = gymnasium.make("nav_env:Navigation-v0", collision="original", see_goal=see_goal, render_mode="rgb_array")
    check_env(env.unwrapped)


def test_registered_single_and_vector_entry_points():
    env = gymnasium.make("nav_env:Navigation-v0", obstacles="hard")
    assert env.unwrapped.obstacles == "hard"
    envs = gymnasium.make_vec("nav_env:Navigation-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(envs, NavigationVectorEnv)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 4) and envs.observation_space.contains(obs)


@pytest.mark.parametrize("see_goal, dim", [(True, 4), (False, 2)])
def test_see_goal_shapes(see_goal, dim):
    env = NavigationEnv(see_goal=see_goal)
    obs, _ = env.reset(seed=0, options={"goal": (1.0, 2.0)})
    assert obs.shape == (dim,) and obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert np.array_equal(obs[:2], np.float32([9.9, 9.9]))
    if see_goal:
        assert np.array_equal(obs[2:], np.float32([1.0, 2.0]))
    envs = NavigationVectorEnv(5, see_goal=see_goal)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (5, dim) and envs.observation_space.contains(obs)
    obs, *_ = envs.step(np.full(5, SW))
    assert obs.shape == (5, dim) and envs.observation_space.contains(obs)


# --- geometry -----------------------------------------------------------------------------------------

small_int = st.integers(-4, 4)
point = st.tuples(small_int, small_int)


def test_segments_intersect_matches_oracle_for_every_pair_of_segments_on_a_3_by_3_lattice():
    # All 6,561 ordered pairs of segments with endpoints on {0, 1, 2}^2: every collinear, touching,
    # crossing and degenerate (point) configuration of that lattice, exact in both implementations.
    points = list(itertools.product(range(3), repeat=2))
    pairs = np.array([[*a, *b, *c, *d] for a, b, c, d in itertools.product(points, repeat=4)], dtype=np.float64)
    fast = nav_env.segments_intersect(pairs[:, 0:2], pairs[:, 2:4], pairs[:, 4:6], pairs[:, 6:8])
    exact = [oracle_intersect(row[0:2], row[2:4], row[4:6], row[6:8]) for row in pairs.tolist()]
    assert np.asarray(fast).tolist() == exact


@settings(max_examples=500, deadline=None)
@given(point, point, point, point)
def test_segments_intersect_matches_oracle_on_integer_points(p0, p1, q0, q1):
    # Wider integer coordinates than the lattice above, so more slopes; still exact in both.
    assert bool(nav_env.segments_intersect(p0, p1, q0, q1)) == oracle_intersect(p0, p1, q0, q1)


def test_segments_intersect_matches_oracle_for_any_step_size():
    # Moves of random length and direction near a segment, in floats: the test does not rely on the grid.
    rng = np.random.default_rng(0)
    n = 4000
    step = rng.uniform(0.01, 2.0, n)[:, None] * np.stack([np.cos(a := rng.uniform(0, 2 * np.pi, n)), np.sin(a)], 1)
    p0 = rng.uniform(3.0, 7.0, (n, 2))
    p1 = p0 + step
    q0, q1 = np.array([5.0, 3.0]), np.array([5.0, 7.0])
    fast = nav_env.segments_intersect(p0, p1, q0, q1)
    exact = [oracle_intersect(a, b, q0, q1) for a, b in zip(p0, p1)]
    assert fast.tolist() == exact
    assert 0.1 < fast.mean() < 0.9  # the sample exercises both outcomes


@pytest.mark.parametrize("level", list(nav_env.OBSTACLES))
def test_collision_table_matches_oracle_for_every_cell_and_action(level):
    table = nav_env.collision_table(level)
    cells = np.stack(np.meshgrid(np.arange(101), np.arange(101), indexing="ij"), -1).reshape(-1, 1, 2)
    targets = cells + nav_env.ACTION_DELTAS
    # A move whose bounding box is more than a cell away from every segment cannot touch it; check the
    # rest exactly. (Bounding-box separation is a sufficient condition for non-intersection.)
    segments = np.array(nav_env.OBSTACLES[level]).reshape(-1, 2, 2) * 10
    near = np.zeros(targets.shape[:2], dtype=bool)
    for a, b in segments:
        low, high = np.minimum(a, b) - 1.5, np.maximum(a, b) + 1.5
        near |= ((np.minimum(cells, targets) <= high) & (np.maximum(cells, targets) >= low)).all(-1)
    off_map = ((targets < 0) | (targets > 100)).any(-1)
    flat = table.reshape(-1, 8)
    assert np.array_equal(flat == nav_env.WALL, off_map)
    assert not (flat[~near & ~off_map] == nav_env.OBSTACLE).any()
    checked = 0
    for index, action in zip(*np.nonzero(near & ~off_map)):
        start, end = cell_to_map(cells[index, 0]), cell_to_map(targets[index, action])
        assert (flat[index, action] == nav_env.OBSTACLE) == oracle_blocked(level, start, end), (level, start, end)
        checked += 1
    assert checked > 0 or level == "none"


@pytest.mark.parametrize("level", ["easy", "medium", "hard"])
def test_walks_never_cross_a_segment_and_are_blocked_only_when_they_must_be(level):
    # Goal-seeking walks with 30% random moves, so they run into the obstacles often.
    rng = np.random.default_rng(1)
    num_envs = 48
    goals = sample_goals("uniform", num_envs, rng)
    envs = NavigationVectorEnv(num_envs, obstacles=level, autoreset_mode=AutoresetMode.DISABLED)
    envs.reset(options={"goals": goals})
    blocked_moves = 0
    for _ in range(nav_env.MAX_EPISODE_STEPS):
        before = envs.positions.copy()
        targets = before[:, None, :] + nav_env.ACTION_DELTAS / 10
        greedy = ((targets - goals[:, None, :]) ** 2).sum(-1).argmin(1)
        actions = np.where(rng.random(num_envs) < 0.3, rng.integers(0, 8, num_envs), greedy)
        running = ~(envs._batch.terminated | envs._batch.truncated)
        envs.step(actions)
        after = envs.positions
        for i in np.flatnonzero(running):
            start = cell_to_map(np.rint(before[i] * 10))
            intended = cell_to_map(np.rint(before[i] * 10) + nav_env.ACTION_DELTAS[actions[i]])
            must_block = oracle_blocked(level, start, intended)
            moved = not np.array_equal(before[i], after[i])
            assert moved != must_block, (level, start, actions[i])
            blocked_moves += must_block
            if moved:  # the executed move touches no segment (independent check)
                assert not oracle_blocked(level, start, cell_to_map(np.rint(after[i] * 10)))
    assert blocked_moves > 20  # the walks ran into the obstacles


def test_walls_hold_and_the_agent_never_leaves_the_map():
    env = NavigationEnv(obstacles="none")
    env.reset(options={"goal": (2.0, 3.0)})
    obs, reward, *_ = env.step(E)  # (9.9, 9.9) -> (10.0, 9.9)
    assert np.array_equal(obs[:2], np.float32([10.0, 9.9]))
    assert reward == pytest.approx(-((10.0 - 2.0) ** 2 + (9.9 - 3.0) ** 2))
    for action in (E, NE, SE):  # all leave the map: blocked, the agent stays
        obs, reward2, *_ = env.step(action)
        assert np.array_equal(obs[:2], np.float32([10.0, 9.9])) and reward2 == reward
    envs = NavigationVectorEnv(64, obstacles="none")
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        obs, *_ = envs.step(rng.integers(0, 8, 64))
        assert (obs >= 0).all() and (obs <= 10).all()


def walk(env, actions):
    for action in actions:
        result = env.step(action)
    return result


@pytest.mark.parametrize("collision", ["block", "stick"])
def test_touching_an_obstacle_end_is_blocked_and_stick_freezes(collision):
    # Easy level: the wall is x = 5 for y in [3, 7]. 49 moves W reach (5.0, 9.9); moving S, the 28th
    # move reaches (5.0, 7.1) and the 29th would touch the segment's end (5, 7): blocked.
    env = NavigationEnv(obstacles="easy", collision=collision)
    env.reset(options={"goal": (0.0, 0.0)})
    obs, reward, terminated, truncated, info = walk(env, [W] * 49 + [S] * 29)
    assert np.allclose(env.position, [5.0, 7.1])
    assert reward == pytest.approx(-(5.0**2 + 7.1**2)) and info["distance"] == pytest.approx(np.hypot(5.0, 7.1))
    assert not terminated and not truncated
    walk(env, [E])  # a move away from the wall
    expected = [5.0, 7.1] if collision == "stick" else [5.1, 7.1]
    assert np.allclose(env.position, expected)


def test_crossing_the_middle_of_a_segment_is_blocked():
    # Medium level: from (5.4, 5.1) a SW move would go to (5.3, 5.0), touching the bar y = 5.
    env = NavigationEnv(obstacles="medium")
    env.reset(options={"goal": (0.0, 0.0)})
    walk(env, [S] * 48 + [W] * 45)  # (9.9, 5.1) then (5.4, 5.1)
    assert np.allclose(env.position, [5.4, 5.1])
    env.step(SW)
    assert np.allclose(env.position, [5.4, 5.1])
    env.step(W)  # parallel to the bar, one cell above it: free
    assert np.allclose(env.position, [5.3, 5.1])


def test_goal_reached_on_the_radius_terminates_with_reward_zero():
    env = NavigationEnv(obstacles="none")
    env.reset(options={"goal": (9.6, 9.6)})
    _, reward, terminated, _, info = env.step(SW)  # (9.8, 9.8): distance sqrt(0.08)
    assert reward == pytest.approx(-0.08) and not terminated
    _, reward, terminated, truncated, info = env.step(SW)  # (9.7, 9.7): distance sqrt(0.02), on the radius
    assert reward == 0.0 and terminated and not truncated
    assert info["distance"] == pytest.approx(np.sqrt(0.02))


def test_truncation_after_100_steps():
    env = NavigationEnv(obstacles="none")
    env.reset(options={"goal": (0.0, 0.0)})
    for t in range(1, 101):
        _, _, terminated, truncated, _ = env.step(N)  # pushes against the top wall, never reaches the goal
        assert not terminated and truncated == (t == 100)


def test_vector_autoreset_next_step_keeps_the_goal():
    envs = NavigationVectorEnv(2, obstacles="none")
    envs.reset(options={"goals": [(9.7, 9.9), (0.0, 0.0)]})
    _, rewards, terminated, _, _ = envs.step(np.array([W, W]))
    assert terminated.tolist() == [True, False] and rewards[0] == 0.0
    obs, rewards, terminated, _, _ = envs.step(np.array([S, W]))  # env 0 resets, its action is ignored
    assert np.array_equal(obs[0], np.float32([9.9, 9.9, 9.7, 9.9])) and rewards[0] == 0.0
    assert not terminated[0]


def test_vector_autoreset_disabled_holds_ended_envs_and_reset_mask():
    envs = NavigationVectorEnv(2, obstacles="none", autoreset_mode=AutoresetMode.DISABLED)
    envs.reset(options={"goals": [(9.7, 9.9), (0.0, 0.0)]})
    envs.step(np.array([W, W]))
    for _ in range(3):
        obs, rewards, terminated, _, _ = envs.step(np.array([S, W]))
        assert terminated[0] and rewards[0] == 0.0 and np.allclose(obs[0, :2], [9.8, 9.9])
    envs.reset(options={"reset_mask": np.array([True, False]), "goals": [(1.0, 1.0), (5.0, 5.0)]})
    assert np.allclose(envs.positions[0], [9.9, 9.9]) and np.allclose(envs.goals[0], [1.0, 1.0])
    assert np.allclose(envs.positions[1], [9.5, 9.9]) and np.allclose(envs.goals[1], [0.0, 0.0])  # 4 moves W


# --- collision="original": the papers' own environment ---------------------------------------------------


def test_original_mode_leaves_the_map_for_minus_800_and_comes_back():
    env = NavigationEnv(obstacles="none", collision="original")
    obs, _ = env.reset(options={"goal": (5.0, 5.0)})
    assert obs.dtype == np.float64 and obs.tolist() == [9.9, 9.9, 5.0, 5.0]
    obs, reward, *_ = env.step(E)  # (10.0, 9.9): on the edge, still on the map
    assert obs[0] == 9.9 + 0.1 and reward == -((9.9 + 0.1 - 5.0) ** 2 + (9.9 - 5.0) ** 2)
    obs, reward, terminated, truncated, _ = env.step(NE)  # off the map: no wall
    assert obs[:2].tolist() == [9.9 + 0.1 + 0.1, 9.9 + 0.1] and reward == -800.0
    assert not terminated and not truncated and env.observation_space.contains(obs)
    obs, reward, *_ = env.step(SW)  # back on the edge: the distance reward again
    assert reward == -((obs[0] - 5.0) ** 2 + (obs[1] - 5.0) ** 2)


def test_original_mode_makes_99_moves_and_its_100th_step_repeats_the_reward():
    env = NavigationEnv(obstacles="none", collision="original")
    env.reset(options={"goal": (0.0, 0.0)})
    x = 9.9
    for t in range(1, 100):
        obs, reward, terminated, truncated, _ = env.step(W)  # 99 moves W: (9.9, 9.9) to (0.0, 9.9) and drift
        x = x + -0.1
        assert obs[0] == x and reward == -(x**2 + 9.9**2) and not terminated and not truncated
    assert abs(x) < 1e-12  # float drift off the grid, kept as the original keeps it
    obs, last_reward, terminated, truncated, _ = env.step(E)  # the 100th step does not move
    assert obs[0] == x and last_reward == reward and truncated and not terminated


def test_original_mode_goal_test_on_the_float_squared_distance():
    # From (9.9, 9.9) one SW move lands on (9.8, 9.8) + drift: a diagonal neighbour of the goal (9.7, 9.7)
    # has squared distance 0.02 only up to rounding, and the original compares that float with 0.02.
    for goal in [(9.7, 9.7), (9.8, 9.7), (9.6, 9.8)]:
        env = NavigationEnv(obstacles="none", collision="original")
        env.reset(options={"goal": goal})
        obs, reward, terminated, truncated, _ = env.step(SW)
        distance_sq = math.pow(9.9 - 0.1 - goal[0], 2.0) + math.pow(9.9 - 0.1 - goal[1], 2.0)
        assert terminated == (distance_sq <= 0.02) and not truncated
        assert reward == (0.0 if distance_sq <= 0.02 else -distance_sq)


def test_original_mode_contact_moves_onto_the_obstacle_then_back_and_repeats_the_reward():
    # Easy level: the wall is x = 5 for y in [3, 7]. 44 moves SW and 4 W reach (5.1, 5.5) up to drift;
    # the 49th move, W, lands on the wall's middle.
    env = NavigationEnv(obstacles="easy", collision="original")
    env.reset(options={"goal": (1.0, 1.0)})
    walk(env, [SW] * 44 + [W] * 4)
    before = env.position.copy()
    assert np.allclose(before, [5.1, 5.5]) and before[0] != 5.1  # drifted off the grid
    obs, contact_reward, terminated, truncated, _ = env.step(W)  # onto the wall: the move is taken
    assert np.allclose(obs[:2], [5.0, 5.5])
    assert contact_reward == -(math.pow(obs[0] - 1.0, 2.0) + math.pow(obs[1] - 1.0, 2.0))
    assert not terminated and not truncated
    for t in range(50, 101):  # from now on: back to the point before the contact, its reward repeated
        obs, reward, terminated, truncated, _ = env.step([E, N, SW][t % 3])
        assert obs[:2].tolist() == before.tolist() and reward == contact_reward
        assert not terminated and truncated == (t == 100)


def test_original_mode_squares_with_c_pow_like_python_floats():
    rng = np.random.default_rng(0)
    values = rng.uniform(-20, 20, 20_000)
    expected = np.array([v**2 for v in values.tolist()])  # Python float ** 2: C's pow
    assert np.array_equal(nav_env._pow2(values), expected)
    assert not np.array_equal(values * values, expected)  # so the check can tell the two apart



# Values whose square numpy's AVX-512 power kernel (np.power with an exponent array, numpy 2.4 on x86-64 with
# AVX512_ICL) rounds differently from C's pow, found by comparing the two on 10^6 uniform values in [-20, 20];
# the first four are also squared differently by x * x.
SIMD_POWER_DISAGREES = [float.fromhex(h) for h in (
    "-0x1.697735e7539bcp+2", "-0x1.131b96cd0c2acp+3", "0x1.13d294b3732f4p+3", "0x1.3fff72bcccdfap+3",
    "0x1.c97a3bbcf882cp+3", "0x1.dafccb81cb948p+2", "0x1.812cfdc580418p+2", "0x1.15c9b08d2eaf8p+4")]


def test_original_mode_squares_like_python_floats_where_numpy_simd_power_does_not():
    values = np.array(SIMD_POWER_DISAGREES)
    expected = np.array([v**2 for v in SIMD_POWER_DISAGREES])  # Python float ** 2: C's pow
    assert np.array_equal(nav_env._pow2(values), expected)
    assert np.array_equal(nav_env._pow2(values.reshape(2, 4)), expected.reshape(2, 4))
    assert (values[:4] * values[:4] != expected[:4]).all()  # the product rounds otherwise

NAV_EPISODES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "nav" / "nav_original_episodes.npz"
ORIGINAL_LEVELS = {"None": "none", "Easy": "easy", "Medium": "medium", "Hard": "hard"}


@pytest.fixture(scope="module")
def recorded_episodes():
    if not NAV_EPISODES.is_file():
        pytest.skip(f"{NAV_EPISODES} is absent: the episodes recorded from the papers' environment ship in ../shared/nav/")
    with np.load(NAV_EPISODES) as data:
        return {name: data[name] for name in data.files}


def test_original_mode_replays_every_recorded_episode_through_the_single_env(recorded_episodes):
    d = recorded_episodes
    for e in range(len(d["level"])):
        env = NavigationEnv(obstacles=ORIGINAL_LEVELS[d["level"][e]], collision="original")
        obs, _ = env.reset(options={"goal": d["goal"][e]})
        assert np.array_equal(obs, d["observations"][e, 0]), e
        for t in range(d["steps"][e]):
            obs, reward, terminated, truncated, _ = env.step(int(d["actions"][e, t]))
            assert np.array_equal(obs, d["observations"][e, t + 1]), (e, t)
            assert reward == d["rewards"][e, t], (e, t)
            assert (terminated or truncated) == d["dones"][e, t], (e, t)
        assert terminated or truncated, e  # the recording stops where the original said done


@pytest.mark.parametrize("level", list(ORIGINAL_LEVELS))
def test_original_mode_replays_every_recorded_episode_through_the_vector_env(recorded_episodes, level):
    d = recorded_episodes
    episodes = np.flatnonzero(d["level"] == level)
    envs = NavigationVectorEnv(len(episodes), obstacles=ORIGINAL_LEVELS[level], collision="original",
                               autoreset_mode=AutoresetMode.DISABLED)
    obs, _ = envs.reset(options={"goals": d["goal"][episodes]})
    assert np.array_equal(obs, d["observations"][episodes, 0])
    for t in range(nav_env.MAX_EPISODE_STEPS):
        actions = d["actions"][episodes, t].astype(np.int64)
        live = actions >= 0
        obs, rewards, terminated, truncated, _ = envs.step(np.where(live, actions, 0))
        assert np.array_equal(obs[live], d["observations"][episodes[live], t + 1]), t
        assert np.array_equal(rewards[live], d["rewards"][episodes[live], t]), t
        assert np.array_equal((terminated | truncated)[live], d["dones"][episodes[live], t]), t
    assert (terminated | truncated).all()


# --- single vs vector -----------------------------------------------------------------------------------


@pytest.mark.parametrize("obstacles", ["none", "medium", "hard"])
@pytest.mark.parametrize("collision", nav_env.COLLISIONS)
def test_single_and_vector_env_agree_exactly(obstacles, collision):
    rng = np.random.default_rng(2)
    num_envs = 12
    goals = sample_goals("random", num_envs, rng)
    envs = NavigationVectorEnv(num_envs, obstacles=obstacles, collision=collision)
    singles = [NavigationEnv(obstacles=obstacles, collision=collision) for _ in range(num_envs)]
    obs, info = envs.reset(options={"goals": goals})
    for i, env in enumerate(singles):
        single_obs, single_info = env.reset(options={"goal": goals[i]})
        assert np.array_equal(obs[i], single_obs) and info["distance"][i] == single_info["distance"]
    ended = np.zeros(num_envs, dtype=bool)
    for _ in range(250):  # several episodes, so NEXT_STEP autoresets are compared too
        # bias towards the goals so that episodes end by reaching them as well as by truncation
        greedy = ((obs[:, None, :2] + nav_env.ACTION_DELTAS / 10 - goals[:, None]) ** 2).sum(-1).argmin(1)
        actions = np.where(rng.random(num_envs) < 0.5, rng.integers(0, 8, num_envs), greedy)
        obs, rewards, terminated, truncated, info = envs.step(actions)
        for i, env in enumerate(singles):
            if ended[i]:
                expected = (env.reset(options={"goal": goals[i]})[0], 0.0, False, False)
            else:
                expected = env.step(int(actions[i]))[:4]
            assert np.array_equal(obs[i], expected[0])
            assert (rewards[i], terminated[i], truncated[i]) == tuple(expected[1:])
        ended = terminated | truncated


# --- tasks and seeding ------------------------------------------------------------------------------------


def test_sample_goals_follow_their_distribution():
    rng = np.random.default_rng(3)
    goals = sample_goals("uniform", 4000, rng)
    assert np.allclose(goals * 10, np.rint(goals * 10))  # on the 0.1 grid
    for i, (x0, x1, y0, y1) in enumerate(nav_env.QUADRANTS):
        quadrant = goals[i::4]
        assert (quadrant[:, 0] >= x0).all() and (quadrant[:, 0] <= x1).all()
        assert (quadrant[:, 1] >= y0).all() and (quadrant[:, 1] <= y1).all()
    narrow = sample_goals("narrow", 1000, rng)
    assert (narrow[:, 0] <= 5).all() and (narrow[0::2, 1] <= 5).all() and (narrow[1::2, 1] >= 5).all()
    spread = sample_goals("random", 4000, rng)
    assert spread.min() >= 0 and spread.max() <= 10 and (spread[:, 0] < 5).mean() == pytest.approx(0.5, abs=0.05)
    for level in nav_env.OBSTACLES:  # no goal lies on any obstacle of any level
        for distribution in (goals, narrow, spread):
            assert not nav_env._on_obstacle(np.rint(distribution * 10).astype(int), level).any()


def test_seeds_reproduce():
    def goal_sequence(seed):
        env = NavigationEnv(targets="uniform")
        goals = [env.reset(seed=seed)[0][2:]]
        goals += [env.reset()[0][2:] for _ in range(5)]
        return np.array(goals)

    assert np.array_equal(goal_sequence(7), goal_sequence(7))
    assert not np.array_equal(goal_sequence(7), goal_sequence(8))
    first = NavigationVectorEnv(16).reset(seed=7)[0]
    assert np.array_equal(first, NavigationVectorEnv(16).reset(seed=7)[0])
    assert not np.array_equal(first, NavigationVectorEnv(16).reset(seed=8)[0])
    assert np.array_equal(sample_goals("random", 5, np.random.default_rng(1)), sample_goals("random", 5, np.random.default_rng(1)))


def test_uniform_single_env_cycles_through_quadrants():
    env = NavigationEnv(targets="uniform")
    goals = [env.reset(seed=0)[0][2:]] + [env.reset()[0][2:] for _ in range(7)]
    for i, goal in enumerate(goals):
        x0, x1, y0, y1 = nav_env.QUADRANTS[i % 4]
        assert x0 <= goal[0] <= x1 and y0 <= goal[1] <= y1


# --- rendering ---------------------------------------------------------------------------------------------


def test_render_draws_map_goal_and_trajectory():
    env = NavigationEnv(obstacles="medium", render_mode="rgb_array")
    env.reset(options={"goal": (2.0, 2.0)})
    blank = env.render()
    walk(env, [SW] * 40)
    image = env.render()
    assert image.shape == (400, 400, 3) and image.dtype == np.uint8
    changed = (image != blank).any(-1)
    assert changed.sum() > 100  # the trajectory was drawn
    ys, xs = np.nonzero(changed)
    # the trajectory runs from the upper right towards the centre of the picture
    assert xs.min() > 150 and ys.max() < 250


def test_each_trajectory_is_drawn_in_its_goals_colour():
    size, colours = 200, [(200, 0, 200), (0, 200, 200)]
    trajectories = [np.array([[9.9, 9.9], [9.9, 1.0]]), np.array([[1.0, 9.9], [1.0, 1.0]])]  # two vertical lines
    goals = [(8.0, 1.0), (2.0, 1.0)]
    image = nav_env.render_trajectories(trajectories, goals, "none", size=size, colors=colours)
    assert image.shape == (size, size, 3)
    margin, scale = nav_env.render_layout(size)

    def pixel(x, y):
        return tuple(image[int(size - margin - y * scale), int(margin + x * scale)])

    for i, colour in enumerate(colours):
        assert pixel(*goals[i]) == colour  # goal i's disc
        assert pixel(trajectories[i][0, 0], 5.0) == colour  # trajectory i, halfway down



# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: NavigationEnv(obstacles="extreme"), r"obstacle level 'extreme'.*'none', 'easy', 'medium', 'hard'"),
        (lambda: NavigationEnv(targets="wide"), r"target distribution 'wide'.*'uniform', 'random', 'narrow'"),
        (lambda: NavigationEnv(collision="bounce"), r"collision mode 'bounce'.*'block', 'stick', 'original'"),
        (lambda: NavigationEnv().reset(options={"goal": (11.0, 2.0)}), r"goal \(11, 2\) is outside the map; allowed: x, y in \[0, 10\]"),
        (lambda: NavigationEnv().reset(options={"goal": (5.0, 5.0)}), r"goal \(5, 5\) lies on an obstacle of level 'medium'"),
        (lambda: NavigationEnv().reset(options={"goal": (1.0, float("nan"))}), r"finite"),
        (lambda: NavigationVectorEnv(3).reset(options={"goals": np.zeros((2, 2))}), r"shape \(3, 2\), got shape \(2, 2\)"),
        (lambda: NavigationVectorEnv(0), r"num_envs must be a positive integer, got 0"),
        (lambda: sample_goals("everywhere", 3, np.random.default_rng(0)), r"'everywhere'"),
        (lambda: NavigationVectorEnv(2).step(np.array([0, 8])), r"action 8 out of range; allowed: 0..7"),
    ],
)
def test_bad_input_raises_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_render_layout_places_map_points_where_render_trajectories_draws_them():
    size = 400
    image = nav_env.render_trajectories([], [(2.0, 3.0)], obstacles="none", size=size, colors=[(200, 0, 200)])
    margin, scale = nav_env.render_layout(size)
    for (x, y), colour in (((2.0, 3.0), (200, 0, 200)), (nav_env.START, (0, 170, 0))):
        column, row = int(margin + x * scale), int(size - margin - y * scale)
        assert tuple(image[row, column]) == colour  # a goal disc and the start square are centred there


@pytest.mark.parametrize("collision", ["block", "original"])
def test_vector_env_state_restored_into_a_fresh_env_continues_the_same_episodes(collision):
    """get_state / set_state carry episodes in progress (float positions and contact flags with "original") and the
    generator: an env built with the same arguments, with another history, then steps exactly as the first."""
    envs, fresh = (NavigationVectorEnv(4, "medium", collision=collision) for _ in range(2))
    envs.reset(seed=0)
    fresh.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(130):  # past an episode's end: autoresets draw new goals from the generator
        envs.step(rng.integers(0, 8, 4))
    fresh.set_state(envs.get_state())
    for actions in rng.integers(0, 8, (150, 4)):
        for a, b in zip(envs.step(actions), fresh.step(actions)):
            np.testing.assert_array_equal(a["distance"] if isinstance(a, dict) else a,
                                          b["distance"] if isinstance(b, dict) else b)
