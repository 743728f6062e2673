"""Symbolic Alchemy (Wang et al. 2021, "Alchemy: A benchmark and analysis toolkit for meta-reinforcement
learning agents", NeurIPS 2021 Datasets and Benchmarks), re-implemented as a numpy-batched gymnasium env
that behaves exactly like DeepMind's `dm_alchemy` symbolic env (`get_symbolic_alchemy_level`, commit
68a2625, default options: `observe_used=True`, no end-trial action, 10 trials of 20 steps, 3 stones and
12 potions).

The rules are written out in docs/alchemy_spec.md; "§n" below is a section of that page. The tests
check this module bit for bit against episodes recorded from `dm_alchemy` (tests/test_alchemy_env.py).

The game (§1-§9). A stone's hidden state is a corner of the cube {-1, +1}^3; putting it into the
cauldron scores the sum of its coordinates (-3, -1, +1) or +15 at (+1, +1, +1). A potion sets one
coordinate to one sign, but only along the cube edges that exist in the episode's graph. What the
agent sees is scrambled by the episode's *chemistry*: which colour is which potion (potion map, 48),
which stone features are flipped (stone map, 8), which edges exist (graph, 109) and a 45-degree
rotation of the stone features (4). The chemistry is fixed for an episode of 10 trials; every trial
brings 3 fresh stones and 12 fresh potions and lasts 20 steps. An agent that infers the chemistry
in early trials scores more in later ones: that is the meta-learning problem.

Representation. A chemistry is the canonical dict of §7 (potion_dim_map, potion_dir_map,
stone_dir_map, graph_edges, rotation), items are the dicts of §8 (stones_latent, potions_latent), all
with an optional leading batch axis. Inside, everything is small integers: a chemistry is four
indices (potion map 0..47, stone map 0..7, graph 0..108, rotation 0..3), a stone is its corner n(x)
(8 = used), a potion its latent index (6 = used). One step of every env is then a handful of gathers
from precomputed tables: the stone's next corner per (graph, stone, target), the reward per (stone,
target), and the 5-float stone block / 2-float potion block of the observation per (chemistry,
state). Only the two blocks an action touches are rewritten.

Public API (in this order below; the tables the step reads come last, in their own section):
    SymbolicAlchemyVectorEnv   gymnasium.vector.VectorEnv, all envs stepped as numpy arrays; NEXT_STEP,
                               SAME_STEP and DISABLED autoreset (see its docstring)
    SymbolicAlchemyEnv         gymnasium.Env, a batch of one; registered as "SymbolicAlchemy-v0"
    level_config, chemistry_indices, sample_chemistry(ies), all_chemistries, chemistry_vector
                               levels and their chemistries (§7, §11)
    sample_episode, seeded_chemistries, replay   dm_alchemy's seed-exact draws of an episode (§12) and of
                               the chemistries of many seeds, and an episode with given chemistry, items and
                               actions run through the vector env
    chemistry_keys, sample_seeded_chemistries, repeat_options   a hashable key per chemistry; the chemistries of
                               fresh seeds, redrawn while one is excluded (held out); reset options that play
                               each chemistry (and its items) in several consecutive envs
    valid_action_mask          the actions that change anything, from observations (for action masking)
    uniform_random_actions, random_heuristic_actions   reference bots (batched, from observations)
    bot_episode_returns        one episode of a bot in every env of a just-reset vector env; heuristic_scores
                               each chemistry's mean score of the random-heuristic bot over several episodes
    load_dm_alchemy_eval_set   dm_alchemy's 1,000 evaluation episodes and its five agents' scores on them
                               (needs the dm_alchemy package); eval_set_tasks, eval_set_options (the first n
                               as batched reset options), episode_scores, compare_with_agents, mean_and_sem;
                               score_on_eval_set scores a policy on them
    DMAlchemyVectorEnv         DeepMind's own symbolic envs behind this vector env's reset and step, one
                               Python env per episode: a slow reference (needs the dm_alchemy package)

The envs draw from gymnasium's np_random (PCG64), so a seed gives other episodes than dm_alchemy's
RandomState; to reproduce dm_alchemy's episode for a seed, pass `sample_episode(level, seed)` to reset.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import io
import itertools
import os
from typing import Any, Mapping, NamedTuple, Sequence

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space


# --- sizes (§1, §2, §8, §9, §10, §11) ---------------------------------------------------------------

NUM_TRIALS = 10
STEPS_PER_TRIAL = 20
EPISODE_STEPS = NUM_TRIALS * STEPS_PER_TRIAL
NUM_STONES = 3  # stone slots per trial
NUM_POTIONS = 12  # potion slots per trial
NUM_AXES = 3
NUM_VERTICES = 8
NUM_LATENT_POTIONS = 6
NUM_ACTIONS = 1 + NUM_STONES * (1 + NUM_POTIONS)  # no-op, then per stone: cauldron, 12 potions
BONUS = 12  # extra reward for the (+1, +1, +1) stone (§1.2)
STONE_FEATURES = NUM_AXES + 2  # perceived coordinates, value / 3, used flag (§10)
POTION_FEATURES = 2  # colour value, used flag
OBS_SIZE = NUM_STONES * STONE_FEATURES + NUM_POTIONS * POTION_FEATURES  # 39
CHEMISTRY_VECTOR_SIZE = 28  # §11


# --- levels (§7) ----------------------------------------------------------------------------------

STANDARD_LEVEL = "alchemy/perceptual_mapping_randomized_with_rotation_and_random_bottleneck"
LEVELS = (
    STANDARD_LEVEL,
    "alchemy/perceptual_mapping_randomized_with_random_bottleneck",  # no rotation
    "alchemy/perceptual_mapping_randomized",  # full cube, no rotation
    "alchemy/all_fixed",  # fixed maps, full cube, no rotation
    "alchemy/all_fixed_bottleneck1",  # fixed maps, one of §3.3's fixed bottleneck graphs
    "alchemy/all_fixed_bottleneck2",
    "alchemy/all_fixed_bottleneck3",
)
SHAPING_SUFFIX = "_w_shaping"  # the 3D env's reward shaping; the symbolic env ignores it (§7)


# --- the environments -----------------------------------------------------------------------------


class SymbolicAlchemyEnv(gymnasium.Env):
    """Symbolic Alchemy (Wang et al. 2021), one env at a time.

    ## Description
    Every episode has a hidden *chemistry* (docs/alchemy_spec.md §7): which colour is which potion,
    which stone features are flipped, which cube edges a potion can move a stone along, and a rotation
    of the stone features. An episode is 10 trials of 20 steps; each trial brings 3 fresh stones and 12
    fresh potions. Potions move stones between corners of the cube {-1, +1}^3, and the cauldron pays
    for the stones put into it, most for the corner (+1, +1, +1). The chemistry stays the same for the
    whole episode, so what the agent learns about it in early trials pays in later ones: Alchemy is a
    meta-RL benchmark within one episode. This env is a SymbolicAlchemyVectorEnv of one, so the two
    step the same code.

    ## Action Space
    `Discrete(40)` (§9.1):

    | action | meaning |
    |---|---|
    | 0 | no-op |
    | 1 + 13 s | stone s (0..2) into the cauldron |
    | 2 + 13 s + p | stone s into potion p (0..11) |

    An action that names a stone already in the cauldron, or a potion already used, does nothing, like
    the no-op (§9.2); `valid_action_mask(obs)` gives the actions that can change something.

    ## Observation Space
    `Box(-1, 2, (39,), float32)` (§10); with `see_chemistry=True`, `(67,)`, the last 28 in [0, 1]:

    | index | observation | values |
    |---|---|---|
    | 5 s + 0, 1, 2 | perceived coordinates of stone s (2.0 once used) | -1, 0, 1 |
    | 5 s + 3 | value of stone s / 3, without the bonus (2.0 once used) | -1, -1/3, 1/3, 1 |
    | 5 s + 4 | stone s used | 0, 1 |
    | 15 + 2 p | colour of potion p, c / 3 - 1 for colour c (1.0 once used) | -1, -2/3, ..., 2/3 |
    | 16 + 2 p | potion p used | 0, 1 |
    | 39 ... 66 | ground-truth chemistry vector (§11), only with `see_chemistry=True` | 0, 1 |

    ## Rewards
    Only the cauldron pays (§1.2): a stone with latent coordinates x gives x0 + x1 + x2, i.e. -3, -1
    or +1, and +15 at (+1, +1, +1). Every other step gives 0.

    ## Starting State
    `reset` shows trial 0 with all 3 stones and 12 potions present; the items of all 10 trials are
    drawn (§8) or given. The chemistry is drawn from the level at the first reset, at a seeded reset
    and with `new_chemistry`, and otherwise kept from the last episode.

    ## Episode End
    Terminated after the 200th step (10 trials of 20 steps, dm_alchemy's LAST step with discount 0);
    never truncated. A trial always lasts 20 steps, even when its items are used up. The observation
    returned by steps 20, 40, ..., 180 already shows the next trial (`info["new_trial"]` True), while
    its reward belongs to the trial that ended (§9.3). Stepping after termination does nothing (reward
    0) until `reset`.

    ## Arguments
    - `level`: one of `LEVELS` (default `STANDARD_LEVEL`), optionally with the suffix "_w_shaping",
      which the symbolic game ignores. The level decides how chemistries are drawn (§7); any valid
      chemistry can be set on any level.
    - `see_chemistry`: append the 28-float ground-truth chemistry vector (default False).
    - `new_chemistry_each_episode`: draw a new chemistry at every reset, as dm_alchemy does (default
      False, which keeps a chemistry across resets so that it can serve as a meta-RL task).
    - `render_mode`: only None (the symbolic game has no picture).

    ## Reset Options
    - `"chemistry"`: a canonical chemistry dict (§7), used from this episode on.
    - `"new_chemistry"`: True draws a new chemistry from the level.
    - `"items"`: canonical items of one episode (§8), `stones_latent` (10, 3, 3) and
      `potions_latent` (10, 12, 2), for this episode only.

    ## Tasks
    A task is a chemistry, `{"chemistry": canonical dict}`, optionally with every trial's items,
    `{"items": canonical dict}` (an evaluation episode such as dm_alchemy's). `sample_tasks(n)` draws
    n chemistries of the level with the env's generator; `set_task(task)` uses the task at every later
    reset, seeded or not, until it is set again; `get_task()` returns it, or the current chemistry while
    none is set (learn2learn's MetaEnv convention).

    ## Info
    `info["trial"]`: the trial (0..9) the observation shows. `info["new_trial"]`: True where the
    observation shows a fresh trial (after a reset and after steps 20, 40, ..., 180).

    ## Version History
    - v0: dm_alchemy's symbolic env at commit 68a2625, default options.
    """

    metadata = {"render_modes": []}

    def __init__(self, level: str = STANDARD_LEVEL, see_chemistry: bool = False,
                 new_chemistry_each_episode: bool = False, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"unknown render mode {render_mode!r}; allowed: None (no rendering)")
        self._vector = SymbolicAlchemyVectorEnv(1, level, see_chemistry, AutoresetMode.DISABLED,
                                                new_chemistry_each_episode)
        self.level, self.see_chemistry = level, see_chemistry
        self.observation_space = self._vector.single_observation_space
        self.action_space = self._vector.single_action_space

    def sample_tasks(self, num_tasks: int) -> list[dict[str, Any]]:
        """Draw num_tasks chemistries of the level (tasks {"chemistry": ...}) with this env's generator."""
        return _chemistry_tasks(sample_chemistries(self.level, num_tasks, self.np_random))

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Use this chemistry from the next reset on, until set_task is called again."""
        self._vector.set_task(task)

    def get_task(self) -> dict[str, Any]:
        """The set task, or the current chemistry while none is set."""
        return self._vector.get_task()[0]

    @property
    def chemistry(self) -> dict[str, Any]:
        """The current chemistry, canonical (§7) and unbatched."""
        return _unbatch(self._vector.chemistries)

    @property
    def episode_items(self) -> dict[str, np.ndarray]:
        """The items of every trial of the current episode (§8): stones_latent (10, 3, 3), potions_latent (10, 12, 2)."""
        return {key: value[0] for key, value in self._vector.episode_items.items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._vector.np_random = self.np_random  # one generator, so this env's seed decides everything
        options = dict(options or {})
        unknown = set(options) - {"chemistry", "new_chemistry", "items"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; allowed: chemistry, new_chemistry, items")
        vector_options = {
            "chemistries": options.get("chemistry"),
            "new_chemistries": bool(options.get("new_chemistry")) or seed is not None,
            "items": options.get("items"),
        }
        observations, info = self._vector.reset(options=vector_options)
        return observations[0], {key: value[0].item() for key, value in info.items()}

    def step(self, action):
        observations, rewards, terminated, truncated, info = self._vector.step(np.asarray([action]))
        return (observations[0], float(rewards[0]), bool(terminated[0]), bool(truncated[0]),
                {key: value[0].item() for key, value in info.items()})


class SymbolicAlchemyVectorEnv(gymnasium.vector.VectorEnv):
    """num_envs symbolic Alchemy envs stepped together as numpy arrays (no Python loop over envs).

    ## Description, Action Space, Observation Space, Rewards, Episode End
    As SymbolicAlchemyEnv, per env: actions int (num_envs,) in 0..39, observations float32
    (num_envs, 39) or (num_envs, 67), rewards float64 (num_envs,), `terminated` True on each env's
    200th step, `truncated` always False, and `info["trial"]`, `info["new_trial"]` arrays (num_envs,).

    ## Starting State
    Each env keeps its chemistry across episodes (resets and autoresets) until it is changed. The
    chemistries are drawn from the level at the first reset, at a reset given a seed and with
    `new_chemistries`, and at every episode with `new_chemistry_each_episode=True`. Every episode draws
    the items of its 10 trials as it starts, unless reset options or tasks give them.

    ## Arguments
    - `num_envs`: the number of envs (a positive integer).
    - `level`, `see_chemistry`, `new_chemistry_each_episode`: as SymbolicAlchemyEnv.
    - `autoreset_mode` (`metadata["autoreset_mode"]`, an AutoresetMode or its value):
      - NEXT_STEP (default): the step after an episode's last one ignores that env's action and
        returns the first observation of its next episode, reward 0, not terminated,
        `info["new_trial"]` True.
      - SAME_STEP: the last step returns terminated=True with the next episode's first observation;
        `info["final_obs"]` (a float32 (num_envs, obs size) array, rows valid where
        `info["_final_obs"]`; SyncVectorEnv uses an object array, indexed the same way) and
        `info["final_info"]` hold what the last step showed.
      - DISABLED: an ended env ignores its actions (reward 0, terminated stays True) until a reset.

    ## Reset Options
    - `"chemistries"`: canonical chemistries (§7), batched (num_envs, ...) or one for every env.
    - `"new_chemistries"`: True draws new chemistries from the level.
    - `"items"`: canonical items (§8), batched (num_envs, ...) or one episode's for every env, for the
      episodes this reset starts.
    - `"reset_mask"`: bool (num_envs,); only the envs where it is True restart (the others keep their
      state and observation; `info["new_trial"]` marks the restarted ones). Works in every mode.

    ## Tasks
    As SymbolicAlchemyEnv, with one task per env (a sequence of num_envs tasks) or one task for every
    env; a set task is used at every later reset and autoreset. The properties `chemistries` and
    `episode_items` give the current ones in canonical form (what `replay` takes).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        level: str = STANDARD_LEVEL,
        see_chemistry: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        new_chemistry_each_episode: bool = False,
    ):
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        level_config(level)  # raises on unknown names
        if isinstance(autoreset_mode, str):
            modes = {mode.value: mode for mode in AutoresetMode}
            if autoreset_mode not in modes:
                raise ValueError(f"unknown autoreset mode {autoreset_mode!r}; allowed: {', '.join(modes)}")
            autoreset_mode = modes[autoreset_mode]
        self.num_envs, self.level, self.see_chemistry = int(num_envs), level, bool(see_chemistry)
        self.new_chemistry_each_episode = bool(new_chemistry_each_episode)
        self.metadata = {"autoreset_mode": AutoresetMode(autoreset_mode)}
        self._batch = _AlchemyBatch(self.num_envs, self.see_chemistry)
        self._has_chemistries = False
        self._task_chemistries: dict[str, np.ndarray] | None = None  # set by set_task
        self._task_items: tuple[np.ndarray, np.ndarray] | None = None  # (vertex, latent potion), set by set_task
        self.single_observation_space = _observation_space(self.see_chemistry)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    # The meta-RL task convention of learn2learn's MetaEnv, garage, ProMP and RLlib's TaskSettableEnv.
    # A task is a chemistry, {"chemistry": canonical dict (unbatched)}, optionally with {"items": canonical
    # items (unbatched)} that fix every trial's stones and potions (an evaluation episode such as
    # dm_alchemy's, load_dm_alchemy_eval_set); without them every episode draws fresh items.

    def sample_tasks(self, num_tasks: int) -> list[dict[str, Any]]:
        """Draw num_tasks chemistries of the level with this env's generator (`np_random`)."""
        return _chemistry_tasks(sample_chemistries(self.level, num_tasks, self.np_random))

    def set_task(self, task: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """One task per env (a sequence of num_envs tasks), or one task for every env. Every following
        reset and autoreset uses them until set_task is called again: their chemistries, and their items
        where the tasks give "items" (either all tasks give items or none; without them a seed draws new
        items, not new chemistries)."""
        if self.new_chemistry_each_episode:
            raise ValueError("set_task: with new_chemistry_each_episode=True every episode draws its own chemistry, "
                             "so a task cannot stay set; allowed: new_chemistry_each_episode=False")
        tasks = [task] * self.num_envs if isinstance(task, Mapping) else list(task)
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_task takes one task or {self.num_envs} tasks (one per env), got {len(tasks)}")
        for task in tasks:
            if not isinstance(task, Mapping) or "chemistry" not in task:
                raise ValueError(f"an Alchemy task is a dict {{'chemistry': canonical chemistry}}, got {task!r}")
        with_items = ["items" in task for task in tasks]
        if any(with_items) and not all(with_items):
            raise ValueError("set_task: either every task gives 'items' or none does; got a mix")
        indices = [chemistry_indices(task["chemistry"])[0] for task in tasks]  # validates each
        self._task_chemistries = _indices_to_chemistry(ChemistryIndices(*map(np.concatenate, zip(*indices))))
        self._task_items = None
        if all(with_items):
            items = [_item_indices(task["items"]) for task in tasks]  # validates each
            if any(batched for _, _, batched in items):
                raise ValueError("set_task: a task's items are one episode's, without a batch axis")
            self._task_items = tuple(np.concatenate(parts) for parts in list(zip(*items))[:2])

    def get_task(self) -> list[dict[str, Any]]:
        """The set tasks, one per env, or each env's current chemistry while none is set."""
        tasks = _chemistry_tasks(self.chemistries if self._task_chemistries is None else self._task_chemistries)
        if self._task_items is not None:
            items = _indices_to_items(*self._task_items)
            for row, task in enumerate(tasks):
                task["items"] = {key: value[row] for key, value in items.items()}
        return tasks

    @property
    def chemistries(self) -> dict[str, np.ndarray]:
        """The envs' chemistries, canonical with a leading (num_envs,) axis."""
        return _indices_to_chemistry(ChemistryIndices(*(a.copy() for a in self._batch.chemistry)))

    @property
    def episode_items(self) -> dict[str, np.ndarray]:
        """The items of every trial of the envs' current episodes: stones_latent (num_envs, 10, 3, 3),
        potions_latent (num_envs, 10, 12, 2); with `chemistries`, what `replay` needs."""
        return _indices_to_items(self._batch.episode_stones, self._batch.episode_potions)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"chemistries", "new_chemistries", "items", "reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; allowed: chemistries, new_chemistries, "
                             f"items, reset_mask")
        mask = np.ones(self.num_envs, dtype=bool)
        if options.get("reset_mask") is not None:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != bool:
                raise ValueError(
                    f"reset_mask must be a bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}"
                )
        chemistries = options.get("chemistries")
        if chemistries is None:
            chemistries = self._task_chemistries
        if chemistries is not None:
            indices, _ = chemistry_indices(chemistries, self.num_envs)
            self._batch.set_chemistries(mask, ChemistryIndices(*(a[mask] for a in indices)))
            self._has_chemistries = True
        elif not self._has_chemistries:  # the very first reset draws every env's chemistry
            self._draw_chemistries(np.ones(self.num_envs, dtype=bool))
        elif seed is not None or options.get("new_chemistries") or self.new_chemistry_each_episode:
            self._draw_chemistries(mask)
        if options.get("items") is not None:
            vertex, latent_potion, _ = _item_indices(options["items"], self.num_envs)
            self._batch.start_episodes(mask, vertex[mask], latent_potion[mask])
        else:
            self._draw_items_and_start(mask)
        return self._batch.observation(), {"trial": self._batch.trial.copy(), "new_trial": mask.copy()}

    def _draw_chemistries(self, mask: np.ndarray) -> None:
        self._batch.set_chemistries(mask, _sample_chemistry_indices(self.level, int(mask.sum()), self.np_random))
        self._has_chemistries = True

    def _draw_items_and_start(self, mask: np.ndarray) -> None:
        if self._task_items is not None:  # the tasks fix the items: nothing is drawn
            self._batch.start_episodes(mask, self._task_items[0][mask], self._task_items[1][mask])
            return
        vertex, latent_potion = _draw_items(self.np_random, (int(mask.sum()), NUM_TRIALS))
        self._batch.start_episodes(mask, vertex, latent_potion)

    def _autoreset(self, mask: np.ndarray) -> None:
        if self.new_chemistry_each_episode:
            self._draw_chemistries(mask)
        self._draw_items_and_start(mask)

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
        mode = self.metadata["autoreset_mode"]
        ended = self._batch.episode_over()
        active = restarted = None
        if ended.any() and mode == AutoresetMode.NEXT_STEP:
            restarted = ended
            self._autoreset(restarted)
            active = ~restarted
        elif ended.any() and mode == AutoresetMode.DISABLED:
            active = ~ended
        rewards, new_trial = self._batch.step(actions, active)
        if restarted is not None:
            new_trial |= restarted
        terminated = self._batch.episode_over()
        truncated = np.zeros(self.num_envs, dtype=bool)
        observations = self._batch.observation()
        info = {"trial": self._batch.trial.copy(), "new_trial": new_trial}
        if mode == AutoresetMode.SAME_STEP and terminated.any():
            final = {"final_obs": observations, "_final_obs": terminated.copy(), "final_info": info,
                     "_final_info": terminated.copy()}
            self._autoreset(terminated)
            observations = self._batch.observation()
            info = {"trial": self._batch.trial.copy(), "new_trial": new_trial | terminated, **final}
        return observations, rewards, terminated, truncated, info


# --- chemistries, episodes and replay -------------------------------------------------------------


def level_config(level: str) -> LevelConfig:
    """Parse a level name as dm_alchemy does (substring switches, §3.3 and §7); unknown names raise."""
    base = level.removesuffix(SHAPING_SUFFIX) if isinstance(level, str) else level
    if base not in LEVELS:
        raise ValueError(
            f"unknown level {level!r}; allowed: {', '.join(map(repr, LEVELS))} (each optionally + {SHAPING_SUFFIX!r})"
        )
    return _level_config(base)


def chemistry_indices(chemistry: Mapping[str, Any], num_envs: int | None = None) -> tuple[ChemistryIndices, bool]:
    """Validate a canonical chemistry (§7; fields with or without a leading batch axis) and encode it.

    Returns the indices (arrays of the batch size, or of num_envs when the chemistry is unbatched and
    num_envs is given, else of length 1) and whether the input was batched. Extra keys ("level", "seed")
    are ignored. Raises ValueError naming the bad field and value.
    """
    arrays, n = _fields(chemistry, "chemistry", _CHEMISTRY_SHAPES)
    dim_map, dir_map, stone_dir_map, graph_edges, rotation = _broadcast(arrays, _CHEMISTRY_SHAPES, "chemistry", n,
                                                                        num_envs)
    not_permutation = (np.sort(dim_map, axis=1) != np.arange(NUM_AXES)).any(1)
    if not_permutation.any():
        raise ValueError(f"potion_dim_map {dim_map[not_permutation][0].tolist()} is not a permutation; "
                         f"allowed: the orderings of (0, 1, 2)")
    _check_values("potion_dir_map", dir_map, (-1, 1), "-1 or +1 per latent axis")
    _check_values("stone_dir_map", stone_dir_map, (-1, 1), "-1 or +1 per axis")
    _check_values("graph_edges", graph_edges, (0, 1), "booleans (or 0/1)")
    _check_values("rotation", rotation, range(NUM_ROTATIONS), "0, 1, 2 or 3")
    masks = edges_to_mask(graph_edges)
    graph = _GRAPH_INDEX_OF_MASK[masks]
    if (graph < 0).any():
        bad = int(np.flatnonzero(graph < 0)[0])
        raise ValueError(f"graph_edges {graph_edges[bad].astype(int).tolist()} (mask {masks[bad]}) is not a valid "
                         f"graph; allowed: the {NUM_GRAPHS} connected constraint graphs of docs/alchemy_spec.md §3.2 "
                         f"(VALID_GRAPHS)")
    permutation = (dim_map[:, :, None] == PERMUTATIONS.T[None]).all(1).argmax(1)
    indices = ChemistryIndices(permutation * 8 + _bits_from_signs(dir_map), _bits_from_signs(stone_dir_map), graph,
                               rotation.copy())
    return indices, n is not None


def sample_chemistries(level: str, n: int, rng: Rng) -> dict[str, np.ndarray]:
    """n chemistries drawn from a level, in canonical form with a leading batch axis (n, ...)."""
    return _indices_to_chemistry(_sample_chemistry_indices(level, n, rng))


def sample_chemistry(level: str, rng: Rng) -> dict[str, Any]:
    """One chemistry drawn from a level, canonical and unbatched."""
    return _unbatch(sample_chemistries(level, 1, rng))


def all_chemistries(level: str) -> dict[str, np.ndarray]:
    """Every chemistry a level can draw (canonical, batched): 167,424 for the standard level (§7)."""
    config = level_config(level)
    potion_maps = range(NUM_POTION_MAPS) if config.randomized_maps else [FIXED_POTION_MAP]
    stone_maps = range(NUM_STONE_MAPS) if config.randomized_maps else [FIXED_STONE_MAP]
    graphs = [g for g, p in zip(config.graph_candidates, config.graph_prior) if p > 0]
    rotations = range(NUM_ROTATIONS) if config.rotation else [0]
    grid = np.array(list(itertools.product(potion_maps, stone_maps, graphs, rotations)), dtype=np.int64)
    return _indices_to_chemistry(ChemistryIndices(*grid.T))


def chemistry_vector(chemistry: Mapping[str, Any]) -> np.ndarray:
    """Ground-truth chemistry vector (§11): float32 (28,), or (n, 28) for a batched chemistry."""
    indices, batched = chemistry_indices(chemistry)
    vector = _chemistry_vector_of_indices(indices)
    return vector if batched else vector[0]


def sample_episode(level: str, seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The chemistry and items of the first episode of dm_alchemy's `get_symbolic_alchemy_level(level, seed)`.

    Seed-exact (§12): the same calls on numpy's legacy RandomState in the same order. Returns canonical
    (unbatched) dicts; the chemistry also carries "level" and "seed".
    """
    random_state = np.random.RandomState(seed)
    indices = _sample_chemistry_indices(level, 1, random_state)
    trials = [_draw_items(random_state, ()) for _ in range(NUM_TRIALS)]  # a trial's items are drawn as it starts
    vertex, latent_potion = (np.stack(parts) for parts in zip(*trials))
    chemistry = _unbatch(_indices_to_chemistry(indices))
    chemistry.update(level=level, seed=int(seed))
    return chemistry, _indices_to_items(vertex, latent_potion)


def seeded_chemistries(level: str, seeds: Sequence[int]) -> dict[str, np.ndarray]:
    """The chemistries of `sample_episode(level, seed)` for these seeds, canonical and batched, with their "seed"
    (what DMAlchemyVectorEnv reads to build dm_alchemy's own chemistry objects)."""
    chemistries = [sample_episode(level, int(seed))[0] for seed in seeds]
    batch = {key: np.stack([chemistry[key] for chemistry in chemistries]) for key in _CHEMISTRY_SHAPES}
    return {**batch, "seed": np.asarray(seeds, dtype=np.int64)}


def replay(
    chemistry: Mapping[str, Any], items: Mapping[str, Any], actions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one episode (or a batch) with given chemistry, items and actions through SymbolicAlchemyVectorEnv.

    chemistry: canonical dict (§7); items: canonical dict (§8); actions int (200,). Returns
    observations float32 (201, 39) (index 0 after reset), rewards float64 (201,) (index 0 is 0) and
    new_trial bool (201,). With actions (n, 200), and chemistry/items batched or shared, every output
    gains a leading (n,) axis.
    """
    actions = np.asarray(actions)
    if actions.ndim not in (1, 2) or actions.shape[-1] != EPISODE_STEPS:
        raise ValueError(f"actions must have shape ({EPISODE_STEPS},) or (n, {EPISODE_STEPS}), got {actions.shape}")
    batch = actions.reshape(-1, EPISODE_STEPS)
    n = len(batch)
    env = SymbolicAlchemyVectorEnv(n, autoreset_mode=AutoresetMode.DISABLED)
    observations = np.empty((EPISODE_STEPS + 1, n, OBS_SIZE), dtype=np.float32)
    rewards = np.zeros((EPISODE_STEPS + 1, n))
    new_trial = np.empty((EPISODE_STEPS + 1, n), dtype=bool)
    observations[0], info = env.reset(options={"chemistries": chemistry, "items": items})
    new_trial[0] = info["new_trial"]
    for t in range(EPISODE_STEPS):
        observations[t + 1], rewards[t + 1], _, _, info = env.step(batch[:, t])
        new_trial[t + 1] = info["new_trial"]
    outputs = tuple(np.moveaxis(a, 0, 1) for a in (observations, rewards, new_trial))
    return outputs if actions.ndim == 2 else tuple(a[0] for a in outputs)


def chemistry_keys(chemistries: Mapping[str, Any]) -> list[tuple[int, ...]]:
    """One hashable key per chemistry of a batch (its four indices), to tell chemistries apart."""
    return list(zip(*(a.tolist() for a in chemistry_indices(chemistries)[0])))


def sample_seeded_chemistries(level: str, n: int, rng: np.random.Generator,
                              excluded: frozenset | set = frozenset()) -> dict[str, np.ndarray]:
    """seeded_chemistries of n fresh seeds drawn from rng, each seed redrawn (in order) while its chemistry's key
    (chemistry_keys) is in `excluded`: training chemistries that are never one of a set of held-out ones."""
    seeds = rng.integers(0, 2**31 - 1, size=n)
    chemistries, redrawn = seeded_chemistries(level, seeds), False
    for i, key in enumerate(chemistry_keys(chemistries)):
        while key in excluded:
            seeds[i], redrawn = rng.integers(0, 2**31 - 1), True
            key = chemistry_keys(seeded_chemistries(level, seeds[i : i + 1]))[0]
    return seeded_chemistries(level, seeds) if redrawn else chemistries


def repeat_options(chemistries: Mapping[str, Any], items: Mapping[str, Any] | None, episodes: int) -> dict:
    """Batched reset options giving each of n chemistries (and its items, if given) to `episodes` consecutive envs:
    a vector env of n * episodes envs then plays every chemistry `episodes` times."""
    options = {"chemistries": {key: np.repeat(value, episodes, axis=0) for key, value in chemistries.items()}}
    if items is not None:
        options["items"] = {key: np.repeat(value, episodes, axis=0) for key, value in items.items()}
    return options


# --- reference bots (batched, reading only the observations) --------------------------------------


def _items_seen(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stone values v / 3 (..., 3), stone present (..., 3), potion present (..., 12)) from observations."""
    observations = np.asarray(observations)
    batch = observations.shape[:-1]
    stones = observations[..., : NUM_STONES * STONE_FEATURES].reshape(*batch, NUM_STONES, STONE_FEATURES)
    potions = observations[..., NUM_STONES * STONE_FEATURES : OBS_SIZE].reshape(*batch, NUM_POTIONS, POTION_FEATURES)
    return stones[..., NUM_AXES], stones[..., -1] == 0.0, potions[..., -1] == 0.0


def valid_action_mask(observations: np.ndarray) -> np.ndarray:
    """bool (..., 40): the actions that can change anything. An action naming a stone already in the
    cauldron, or a drunk potion, does nothing (§9.2), exactly like the no-op, which stays valid.
    For invalid-action masking in learners (Huang & Ontanon 2020); reads only the observations."""
    _, stone_present, potion_present = _items_seen(observations)
    batch = stone_present.shape[:-1]
    place_present = np.concatenate([np.ones((*batch, 1), bool), potion_present], axis=-1)  # the cauldron, then potions
    per_stone = stone_present[..., :, None] & place_present[..., None, :]  # (..., 3 stones, 13 places)
    return np.concatenate([np.ones((*batch, 1), bool), per_stone.reshape(*batch, -1)], axis=-1)  # no-op first


def bot_episode_returns(envs, observations: np.ndarray, bot, rng: np.random.Generator) -> np.ndarray:
    """Play one whole episode in every env of a vector env just reset without autoreset (its first
    observations given), with bot(observations, rng) -> actions; return each env's episode return."""
    returns = np.zeros(len(observations))
    for _ in range(EPISODE_STEPS):
        observations, rewards, terminated, _, _ = envs.step(bot(observations, rng))
        returns += rewards
    assert terminated.all(), "every episode lasts exactly 200 steps"
    return returns


def uniform_random_actions(observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each of the 40 actions equally likely (the "uniform random actions" column of the reference-bot
    table in docs/alchemy_env.md)."""
    return rng.integers(0, NUM_ACTIONS, size=len(observations))


def random_heuristic_actions(observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """dm_alchemy's RandomActionBot, vectorised: a random present stone below the maximum value into a
    random present potion; when there is no such stone or no potion left, the present stones of
    positive value into the cauldron one by one (lowest slot first), then no-ops until the trial ends."""
    value, stone_present, potion_present = _items_seen(observations)  # value 1.0 is the (+1, +1, +1) stone, worth 15
    improvable = stone_present & (value < 1.0)
    # Uniform choice among the allowed slots: the argmax of uniform noise restricted to them.
    stone = np.where(improvable, rng.random(improvable.shape), -1.0).argmax(1)
    potion = np.where(potion_present, rng.random(potion_present.shape), -1.0).argmax(1)
    use_potion = improvable.any(1) & potion_present.any(1)
    positive = stone_present & (value > 0.0)
    cash_in = positive.argmax(1)
    actions = np.where(positive.any(1), 1 + (NUM_POTIONS + 1) * cash_in, 0)
    return np.where(use_potion, 2 + (NUM_POTIONS + 1) * stone + potion, actions)


def heuristic_scores(envs, chemistries: Mapping[str, Any], items: Mapping[str, Any] | None, episodes: int,
                     seed: int) -> np.ndarray:
    """float64 (n,): each of n chemistries' mean score of the random-heuristic bot over `episodes` episodes, played
    in a vector env of n * episodes envs without autoreset (repeat_options; with items, those items), the bot's
    choices drawn from np.random.default_rng(seed). dm_alchemy publishes 147.02 +- 1.55 for it."""
    observations, _ = envs.reset(options=repeat_options(chemistries, items, episodes))
    scores = bot_episode_returns(envs, observations, random_heuristic_actions, np.random.default_rng(seed))
    return scores.reshape(len(chemistries["rotation"]), episodes).mean(1)


# --- dm_alchemy's evaluation set: its 1,000 episodes and five agents' recorded events -------------

# How to install DeepMind's package, which is not on PyPI: the wheel in ../shared/wheels, or built from
# source (docs/alchemy_env.md#dm_alchemy); its generated protobuf code needs protobuf 7.x.
DM_ALCHEMY_INSTALL = 'pip install ../shared/wheels/dm_alchemy-1.0.0-py3-none-any.whl "protobuf>=7.35,<8"'
# The agents whose events on the evaluation episodes dm_alchemy ships (agent_events/<name>); "baseline" is
# the V-MPO agent of Wang et al. 2021, "ideal_observer" their Bayes-optimal symbolic agent.
DM_ALCHEMY_AGENTS = ("baseline", "belief_state_predict", "ground_truth_predict", "ideal_observer", "search_oracle")
DM_ALCHEMY_EVAL_LEVEL = "alchemy/perceptual_mapping_randomized_with_random_bottleneck"
_DM_ALCHEMY_EVAL_CHEMISTRIES = "chemistries/perceptual_mapping_randomized_with_random_bottleneck/chemistries"


def episode_scores(chemistries: Mapping[str, Any], items: Mapping[str, Any], actions: np.ndarray) -> np.ndarray:
    """float64 (n,): the return of each of n episodes (batched chemistries and items, actions (n, 200))."""
    actions = np.asarray(actions)
    envs = SymbolicAlchemyVectorEnv(len(actions), autoreset_mode=AutoresetMode.DISABLED)
    envs.reset(options={"chemistries": chemistries, "items": items})
    returns = np.zeros(len(actions))
    for t in range(EPISODE_STEPS):
        returns += envs.step(actions[:, t])[1]
    return returns


def load_dm_alchemy_eval_set() -> dict[str, Any]:
    """dm_alchemy's 1,000 evaluation episodes, on which Wang et al. 2021 report their symbolic-Alchemy scores.

    Read from the installed dm_alchemy package (its chemistries file of the level
    DM_ALCHEMY_EVAL_LEVEL, every episode with rotation 0, and agent_events/) with dm_alchemy's own proto
    conversion (about 5 s), which is then cached on disk (_eval_set_cache_path; reading it back takes
    milliseconds) and in the process: the arrays returned are shared and read-only. Raises ImportError
    naming the install command when the package is absent. Returns a dict with
      level          DM_ALCHEMY_EVAL_LEVEL
      chemistries    canonical, batched (1000, ...)
      items          canonical, batched: stones_latent (1000, 10, 3, 3), potions_latent (1000, 10, 12, 2)
      agent_actions  agent name (DM_ALCHEMY_AGENTS) -> int (1000, 200): its recorded events as our actions
      agent_scores   agent name -> float (1000,): each episode's score, those actions replayed here
    `eval_set_tasks(data)` makes them tasks {"chemistry", "items"} for set_task.
    """
    return _load_dm_alchemy_eval_set()


def eval_set_tasks(data: Mapping[str, Any], episodes: int | None = None) -> list[dict[str, Any]]:
    """The first `episodes` (default all) episodes of load_dm_alchemy_eval_set() as tasks with fixed items."""
    n = len(data["chemistries"]["rotation"]) if episodes is None else episodes
    return [{"chemistry": _unbatch(data["chemistries"], row),
             "items": {key: np.array(value[row]) for key, value in data["items"].items()}} for row in range(n)]


def eval_set_options(episodes: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The first `episodes` (default all) episodes of load_dm_alchemy_eval_set() as the batched reset options
    {"chemistries", "items"} of a vector env with one env per episode (writable copies). The chemistries also
    carry "eval_episode", each episode's index, by which DMAlchemyVectorEnv finds dm_alchemy's own chemistry."""
    data = load_dm_alchemy_eval_set()
    n = len(data["chemistries"]["rotation"]) if episodes is None else episodes
    chemistries = {key: np.array(value[:n]) for key, value in data["chemistries"].items()}
    chemistries["eval_episode"] = np.arange(n)
    return {"chemistries": chemistries, "items": {key: np.array(value[:n]) for key, value in data["items"].items()}}


def mean_and_sem(values: np.ndarray) -> tuple[float, float | None]:
    """The mean and its standard error (None for a single value)."""
    sem = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
    return float(values.mean()), sem


def compare_with_agents(scores, random_heuristic_scores) -> tuple[dict, dict, dict]:
    """Scores of the first n = len(scores) evaluation episodes beside the published agents' on the same episodes
    (load_dm_alchemy_eval_set()'s agent_scores) and the random heuristic's (given: played on the same items).

    Returns three dicts by agent name (DM_ALCHEMY_AGENTS plus "random_heuristic"): the agent's mean score,
    its standard error, and the paired per-episode difference scores - agent as [mean, standard error]
    (standard errors are None for n = 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    references = {agent: np.asarray(agent_scores[: len(scores)], dtype=np.float64)
                  for agent, agent_scores in load_dm_alchemy_eval_set()["agent_scores"].items()}
    references["random_heuristic"] = np.asarray(random_heuristic_scores, dtype=np.float64)
    means = {agent: mean_and_sem(r)[0] for agent, r in references.items()}
    sems = {agent: mean_and_sem(r)[1] for agent, r in references.items()}
    differences = {agent: list(mean_and_sem(scores - r)) for agent, r in references.items()}
    return means, sems, differences


def score_on_eval_set(policy, episodes: int, seed: int) -> dict[str, Any]:
    """A policy zero-shot on the first `episodes` of dm_alchemy's evaluation episodes, one sampled episode each (as
    dm_alchemy's agents played them), beside the published agents and the random heuristic on the same items.

    policy(observations, rng) -> actions, batched as the reference bots. Returns summary figures: eval_episodes,
    eval_set_score and its standard error eval_set_score_sem, and compare_with_agents' reference_scores,
    reference_score_sems and post_minus_reference (agent -> [mean, standard error] of the paired difference)."""
    options = eval_set_options(episodes)
    envs = SymbolicAlchemyVectorEnv(episodes, autoreset_mode="Disabled")
    scores = bot_episode_returns(envs, envs.reset(seed=seed, options=options)[0], policy, None)
    heuristic = heuristic_scores(envs, options["chemistries"], options["items"], 1, seed)
    (score, score_sem), (references, reference_sems, differences) = (mean_and_sem(scores),
                                                                     compare_with_agents(scores, heuristic))
    return dict(eval_episodes=episodes, eval_set_score=score, eval_set_score_sem=score_sem, reference_scores=references,
                reference_score_sems=reference_sems, post_minus_reference=differences)


def _dm_chemistry_to_canonical(chemistry, rotations: list) -> dict[str, Any]:
    """A dm_alchemy utils.Chemistry in canonical form (§7): its potion map's dim_map and dir_map, its stone
    map's latent_pos_dir, the cube edges its graph has, and the index of its rotation in dm_alchemy's
    possible_rotations() (the order §6 numbers them in)."""
    nodes = chemistry.graph.node_list
    edges = [chemistry.graph.edge_list.has_edge(nodes.get_node_by_coords(list(VERTEX_COORDS[a])),
                                                 nodes.get_node_by_coords(list(VERTEX_COORDS[b])))
             for a, b in CUBE_EDGES]
    # the matrices themselves (rotations_equal goes through scipy's Euler angles: 2 s for 1,000 episodes)
    (rotation,) = [r for r, matrix in enumerate(rotations) if np.array_equal(chemistry.rotation, matrix)]
    return {"potion_dim_map": np.asarray(chemistry.potion_map.dim_map, dtype=np.int64),
            "potion_dir_map": np.asarray(chemistry.potion_map.dir_map, dtype=np.int64),
            "stone_dir_map": np.asarray(chemistry.stone_map.latent_pos_dir, dtype=np.int64),
            "graph_edges": np.asarray(edges, dtype=bool), "rotation": rotation}


def _dm_items_to_canonical(episode_items) -> dict[str, np.ndarray]:
    """A dm_alchemy utils.EpisodeItems (10 trials) as canonical items (§8)."""
    stones = [[s.latent_stone().latent_coords for s in trial.stones] for trial in episode_items.trials]
    potions = [[(p.latent_potion().latent_dim, p.latent_potion().latent_dir) for p in trial.potions]
               for trial in episode_items.trials]
    return {"stones_latent": np.asarray(stones, dtype=np.int64), "potions_latent": np.asarray(potions, dtype=np.int64)}


def _events_to_actions(episode_events) -> np.ndarray:
    """One episode's recorded events (a MatrixEventTracker per trial: the frame at which stone s went into
    potion p or, in the last column, the cauldron) as our 200 actions: each trial's events in dm_alchemy's
    own order (events_list, what its ReplayBot replays), then no-ops until the trial ends."""
    actions = np.zeros((NUM_TRIALS, STEPS_PER_TRIAL), dtype=np.int64)
    for trial, tracker in enumerate(episode_events):
        events = tracker.events_list()
        if len(events) > STEPS_PER_TRIAL:
            raise ValueError(f"trial {trial} has {len(events)} events, more than its {STEPS_PER_TRIAL} steps")
        for step, (stone, potion, _) in enumerate(events):
            place = 0 if potion == -1 else int(potion) + 1  # -1 is dm_alchemy's CAULDRON
            actions[trial, step] = 1 + (NUM_POTIONS + 1) * int(stone) + place
    return actions.reshape(-1)


# Bump when the conversion below changes what it returns: caches of the old format are then not read.
_EVAL_SET_FORMAT = 1
_EVAL_SET_GROUPS = ("chemistries", "items", "agent_actions", "agent_scores")


def _eval_set_sources() -> list[str] | None:
    """The package's data files the evaluation set is read from, or None where there is no dm_alchemy with them
    (found without importing it: its __init__ pulls in docker and grpc, about 2 s)."""
    spec = importlib.util.find_spec("dm_alchemy")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    paths = [os.path.join(root, _DM_ALCHEMY_EVAL_CHEMISTRIES)]
    paths += [os.path.join(root, "agent_events", agent) for agent in DM_ALCHEMY_AGENTS]
    return paths if all(os.path.isfile(path) for path in paths) else None


def _eval_set_cache_path(sources: list[str]) -> str:
    """Where the converted evaluation set is cached: named by the hash of its source files' contents and of
    _EVAL_SET_FORMAT, under $META_RL_CACHE (default ~/.cache/meta-rl)."""
    digest = hashlib.sha256(str(_EVAL_SET_FORMAT).encode())
    for path in sources:
        with open(path, "rb") as f:
            digest.update(f.read())
    folder = os.environ.get("META_RL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "meta-rl")
    return os.path.join(folder, f"dm_alchemy_eval_set-{digest.hexdigest()[:16]}.npz")


def _read_eval_set_cache(path: str) -> dict[str, Any] | None:
    try:
        with np.load(path) as saved:
            data = {group: {} for group in _EVAL_SET_GROUPS}
            for name in saved.files:
                group, key = name.split(".", 1)
                data[group][key] = saved[name]
    except (OSError, ValueError, KeyError):  # absent, truncated or foreign: convert again
        return None
    data["level"] = DM_ALCHEMY_EVAL_LEVEL
    return data


def _write_eval_set_cache(path: str, data: dict[str, Any]) -> None:
    """Write the cache atomically (a temporary file renamed over it); a folder that cannot be written only costs
    the next process the conversion again."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"{group}.{key}": value for group in _EVAL_SET_GROUPS for key, value in data[group].items()})
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + f".{os.getpid()}.tmp", "wb") as f:
            f.write(buffer.getvalue())
        os.replace(path + f".{os.getpid()}.tmp", path)
    except OSError:
        pass


def _convert_dm_alchemy_eval_set() -> dict[str, Any]:
    """The evaluation set read from the installed package with dm_alchemy's own proto conversion."""
    try:
        from dm_alchemy import io as dm_io
        from dm_alchemy.encode import chemistries_proto_conversion, symbolic_actions_pb2
        from dm_alchemy.encode import symbolic_actions_proto_conversion
        from dm_alchemy.types import stones_and_potions
    except ImportError as error:
        raise ImportError(f"dm_alchemy's evaluation set needs DeepMind's dm_alchemy package ({error}); install it "
                          f"with `{DM_ALCHEMY_INSTALL}`") from error
    episodes = chemistries_proto_conversion.load_chemistries_and_items(_DM_ALCHEMY_EVAL_CHEMISTRIES)
    rotations = stones_and_potions.possible_rotations()
    chemistries = [_dm_chemistry_to_canonical(chemistry, rotations) for chemistry, _ in episodes]
    items = [_dm_items_to_canonical(episode_items) for _, episode_items in episodes]
    chemistries = {key: np.stack([c[key] for c in chemistries]) for key in _CHEMISTRY_SHAPES}
    items = {key: np.stack([i[key] for i in items]) for key in _ITEM_SHAPES}
    actions = {}
    for agent in DM_ALCHEMY_AGENTS:
        proto = symbolic_actions_pb2.EvaluationSetEvents.FromString(dm_io.read_proto(f"agent_events/{agent}"))
        events = symbolic_actions_proto_conversion.proto_to_evaluation_set_events(proto)
        if len(events) != len(episodes):
            raise ValueError(f"agent_events/{agent} has {len(events)} episodes, the evaluation set {len(episodes)}")
        actions[agent] = np.stack([_events_to_actions(episode) for episode in events])
    n = len(episodes)
    every = {key: np.concatenate([value] * len(actions)) for key, value in chemistries.items()}
    every_items = {key: np.concatenate([value] * len(actions)) for key, value in items.items()}
    scores = episode_scores(every, every_items, np.concatenate(list(actions.values()))).reshape(len(actions), n)
    return {"level": DM_ALCHEMY_EVAL_LEVEL, "chemistries": chemistries, "items": items, "agent_actions": actions,
            "agent_scores": dict(zip(actions, scores))}


@functools.cache
def _load_dm_alchemy_eval_set() -> dict[str, Any]:
    sources = _eval_set_sources()
    data = path = None
    if sources is not None:
        path = _eval_set_cache_path(sources)
        data = _read_eval_set_cache(path)
    if data is None:
        data = _convert_dm_alchemy_eval_set()  # raises ImportError without the package
        if path is not None:
            _write_eval_set_cache(path, data)
    for group in _EVAL_SET_GROUPS:
        for array in data[group].values():
            array.flags.writeable = False  # one copy per process, shared by every caller
    return data


class DMAlchemyVectorEnv:
    """num_envs of DeepMind's `dm_alchemy` symbolic envs behind SymbolicAlchemyVectorEnv's reset and step,
    stepped one by one in Python: a reference to check this module's envs against, far slower than them.

    ## Reset Options
    `"chemistries"` (batched, one per env) and optionally `"items"`, as SymbolicAlchemyVectorEnv's. Every
    chemistry must name where dm_alchemy's own chemistry object comes from: a `"seed"` entry s (the first
    episode's chemistry of `get_symbolic_alchemy_level(level, seed=s)`, which `sample_episode(level, s)`
    gives in canonical form) or an `"eval_episode"` entry (that episode of dm_alchemy's evaluation set, as
    `eval_set_options` gives). A reset without chemistries only seeds the item source and returns `(None, {})`.

    ## Items
    Every trial's items come from the same source as SymbolicAlchemyVectorEnv's: one of those envs (of the
    same size and level, autoreset disabled), reset with the same seed and options, draws them (or takes
    the given ones), and `np_random` is its generator. With the same seeds and options, both classes play
    the same episodes and give the same observations and rewards.

    ## Arguments
    - `num_envs`, `level`, `see_chemistry`: as SymbolicAlchemyVectorEnv (no autoreset: DISABLED only).

    `step(actions)` returns observations float32 (num_envs, 39 or 67), rewards float64, terminated (True
    after each env's 200th step), truncated (always False) and an empty info. Needs DeepMind's package
    (DM_ALCHEMY_INSTALL).
    """

    def __init__(self, num_envs: int, level: str = STANDARD_LEVEL, see_chemistry: bool = False):
        from dm_alchemy import symbolic_alchemy
        from dm_alchemy.types import stones_and_potions
        from dm_alchemy.types import utils as dm_utils

        self._symbolic_alchemy, self._stones_and_potions = symbolic_alchemy, stones_and_potions
        self._dm_utils = dm_utils
        self.num_envs, self.level, self.see_chemistry = num_envs, level, see_chemistry
        self._see = ({"chemistry": dm_utils.ChemistrySeen(content=dm_utils.ElementContent.GROUND_TRUTH)}
                     if see_chemistry else None)
        self._chemistry_cache, self._eval_set, self._envs = {}, None, []
        self._item_source = SymbolicAlchemyVectorEnv(num_envs, level=level, autoreset_mode=AutoresetMode.DISABLED)
        self.single_observation_space = _observation_space(see_chemistry)
        self.single_action_space = self._item_source.single_action_space

    @property
    def np_random(self) -> np.random.Generator:
        """The generator the items are drawn from (what a checkpoint saves)."""
        return self._item_source.np_random

    def _chemistry(self, chemistries: Mapping[str, np.ndarray], row: int):
        """dm_alchemy's chemistry object for row `row` of a batch of chemistries (built once per seed or episode)."""
        if "seed" in chemistries:
            key = ("seed", int(chemistries["seed"][row]))
            if key not in self._chemistry_cache:
                level_env = self._symbolic_alchemy.get_symbolic_alchemy_level(self.level, seed=key[1])
                level_env.reset()
                self._chemistry_cache[key] = level_env._chemistry  # no public getter for the episode's chemistry
        elif "eval_episode" in chemistries:
            key = ("eval_episode", int(chemistries["eval_episode"][row]))
            if key not in self._chemistry_cache:
                from dm_alchemy import io as dm_io
                from dm_alchemy.encode import chemistries_pb2, chemistries_proto_conversion

                if self._eval_set is None:  # dm_alchemy's evaluation chemistries file, parsed once
                    self._eval_set = chemistries_pb2.ChemistriesAndItems.FromString(
                        dm_io.read_proto(_DM_ALCHEMY_EVAL_CHEMISTRIES))
                self._chemistry_cache[key] = chemistries_proto_conversion.proto_to_chemistry(
                    self._eval_set.chemistries[key[1]].chemistry)
        else:
            raise ValueError("DMAlchemyVectorEnv takes chemistries with a 'seed' or an 'eval_episode' entry")
        return self._chemistry_cache[key]

    def _episode_items(self, items: Mapping[str, np.ndarray], row: int) -> list:
        """One env's 10 trials as fresh dm_alchemy TrialItems (its env moves the stones it is given)."""
        sp = self._stones_and_potions
        return [self._dm_utils.TrialItems(
            stones=[sp.LatentStone(np.array(coords)) for coords in items["stones_latent"][row, trial]],
            potions=[sp.LatentPotion(int(axis), int(sign)) for axis, sign in items["potions_latent"][row, trial]])
            for trial in range(NUM_TRIALS)]

    def _observation(self, timesteps) -> np.ndarray:
        parts = [[t.observation["symbolic_obs"]] + ([t.observation["chemistry"]] if self.see_chemistry else [])
                 for t in timesteps]
        return np.stack([np.concatenate(p) for p in parts]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._item_source.reset(seed=seed, options=options)  # the same draws, in the same order, as this module's envs
        chemistries = (options or {}).get("chemistries")
        if chemistries is None:
            return None, {}
        items = self._item_source.episode_items
        self._envs = []
        for row in range(self.num_envs):
            chemistry, trials = self._chemistry(chemistries, row), self._episode_items(items, row)
            self._envs.append(self._symbolic_alchemy.SymbolicAlchemy(
                chemistry_gen=lambda chemistry=chemistry: chemistry, reward_weights=None,
                items_gen=lambda trial, trials=trials: trials[trial], num_trials=NUM_TRIALS,
                see_chemistries=self._see, observe_used=True))
        return self._observation([env.reset() for env in self._envs]), {}

    def step(self, actions):
        timesteps = [env.step(int(a)) for env, a in zip(self._envs, actions)]
        rewards = np.array([t.reward for t in timesteps], dtype=np.float64)
        terminated = np.array([t.last() for t in timesteps])
        return self._observation(timesteps), rewards, terminated, np.zeros_like(terminated), {}

    def close(self):
        self._envs = []


# ==================================================================================================
# Internals: the batched dynamics both envs run, the internal forms of levels and chemistries with the
# validation of canonical dicts, and (last) the precomputed tables the step reads. Module-level names
# used only inside functions may be defined after those functions; the tables are built at import.
# ==================================================================================================


# --- shared dynamics ------------------------------------------------------------------------------


class _AlchemyBatch:
    """State and dynamics of a batch of Alchemy envs as integer arrays; both env classes run this.

    The observation is kept up to date in two contiguous float32 arrays (stone blocks, potion blocks),
    so a step rewrites one stone block and one potion block per env instead of all 15.
    """

    def __init__(self, num_envs: int, see_chemistry: bool):
        n = self.num_envs = num_envs
        self.see_chemistry = see_chemistry
        self.stones = np.zeros((n, NUM_STONES), dtype=np.int64)
        self.potions = np.zeros((n, NUM_POTIONS), dtype=np.int64)
        self.episode_stones = np.zeros((n, NUM_TRIALS, NUM_STONES), dtype=np.int64)
        self.episode_potions = np.zeros((n, NUM_TRIALS, NUM_POTIONS), dtype=np.int64)
        self.elapsed = np.zeros(n, dtype=np.int64)  # steps taken in the current episode
        self.trial = np.zeros(n, dtype=np.int64)  # trial of the items currently shown
        self.chemistry = ChemistryIndices(*(np.zeros(n, dtype=np.int64) for _ in range(4)))
        self.chemistry_vectors = np.zeros((n, CHEMISTRY_VECTOR_SIZE), dtype=np.float32)
        self.stone_features = np.zeros((n, NUM_STONES, STONE_FEATURES), dtype=np.float32)
        self.potion_features = np.zeros((n, NUM_POTIONS, POTION_FEATURES), dtype=np.float32)
        # Per-env offsets into the flat tables, and flat views of the per-slot arrays: a step is then 1-D gathers.
        self.graph_offset = np.zeros(n, dtype=np.int64)
        self.stone_feature_offset = np.zeros(n, dtype=np.int64)
        self.potion_feature_offset = np.zeros(n, dtype=np.int64)
        self.first_stone_slot = np.arange(n, dtype=np.int64) * NUM_STONES
        self.first_potion_slot = np.arange(n, dtype=np.int64) * NUM_POTIONS
        self.stone_slots = self.stones.reshape(-1)
        self.potion_slots = self.potions.reshape(-1)
        self.stone_feature_rows = self.stone_features.reshape(-1, STONE_FEATURES)
        self.potion_feature_rows = self.potion_features.reshape(-1, POTION_FEATURES)

    def set_chemistries(self, rows: np.ndarray, indices: ChemistryIndices) -> None:
        for mine, new in zip(self.chemistry, indices):
            mine[rows] = new
        self.graph_offset[rows] = indices.graph * NUM_STONE_STATES * NUM_TARGETS
        self.stone_feature_offset[rows] = (indices.stone_map * NUM_ROTATIONS + indices.rotation) * NUM_STONE_STATES
        self.potion_feature_offset[rows] = indices.potion_map * NUM_POTION_STATES
        self.chemistry_vectors[rows] = _chemistry_vector_of_indices(indices)

    def start_episodes(self, rows: np.ndarray, vertex: np.ndarray, latent_potion: np.ndarray) -> None:
        """Begin an episode in these envs with these items (n, 10, 3) and (n, 10, 12)."""
        self.episode_stones[rows] = vertex
        self.episode_potions[rows] = latent_potion
        self.elapsed[rows] = 0
        self._start_trials(rows)

    def _start_trials(self, rows: np.ndarray) -> None:
        trial = self.elapsed[rows] // STEPS_PER_TRIAL
        self.trial[rows] = trial
        self.stones[rows] = self.episode_stones[rows, trial]
        self.potions[rows] = self.episode_potions[rows, trial]
        self.stone_features[rows] = STONE_FEATURE_ROWS[self.stone_feature_offset[rows, None] + self.stones[rows]]
        self.potion_features[rows] = POTION_FEATURE_ROWS[self.potion_feature_offset[rows, None] + self.potions[rows]]

    def observation(self) -> np.ndarray:
        n = self.num_envs
        parts = [self.stone_features.reshape(n, -1), self.potion_features.reshape(n, -1)]
        if self.see_chemistry:
            parts.append(self.chemistry_vectors)
        return np.concatenate(parts, axis=1)  # a fresh array: callers may keep it

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Apply one valid action per env (§9.2, §9.3); return (rewards, new-trial flags).

        Envs where `active` is False take a no-op and do not advance their clock.
        """
        if active is not None:
            actions = np.where(active, actions, 0)
        stone_slot = self.first_stone_slot + ACTION_STONE_SLOT[actions]
        potion_slot = self.first_potion_slot + ACTION_POTION_SLOT[actions]
        stone = self.stone_slots[stone_slot]
        potion = self.potion_slots[potion_slot]
        outcome = stone * NUM_TARGETS + ACTION_TARGET[actions * NUM_POTION_STATES + potion]
        new_stone = NEXT_STONE[self.graph_offset + outcome]
        new_potion = np.where(POTION_DRUNK_BY_OUTCOME[outcome], USED_POTION, potion)
        # Write back even when nothing changed: cheaper than selecting the envs that changed.
        self.stone_slots[stone_slot] = new_stone
        self.potion_slots[potion_slot] = new_potion
        self.stone_feature_rows[stone_slot] = STONE_FEATURE_ROWS[self.stone_feature_offset + new_stone]
        self.potion_feature_rows[potion_slot] = POTION_FEATURE_ROWS[self.potion_feature_offset + new_potion]
        rewards = REWARD_OF_OUTCOME[outcome]

        self.elapsed += 1 if active is None else active
        trial_over = self.elapsed % STEPS_PER_TRIAL == 0
        if active is not None:
            trial_over &= active
        if not trial_over.any():
            return rewards, np.zeros(self.num_envs, dtype=bool)
        # The step that ends a trial already shows the next trial's items, except the episode's last (§9.3).
        new_trial = trial_over & (self.elapsed < EPISODE_STEPS)
        self._start_trials(np.flatnonzero(new_trial))
        return rewards, new_trial

    def episode_over(self) -> np.ndarray:
        return self.elapsed >= EPISODE_STEPS


def _check_actions(actions: Any, num_envs: int) -> np.ndarray:
    actions = np.asarray(actions)
    if actions.shape != (num_envs,) or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions must be integers of shape ({num_envs},), got {actions.dtype} {actions.shape}")
    if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
        bad = actions[(actions < 0) | (actions >= NUM_ACTIONS)][0]
        raise ValueError(
            f"action {bad} out of range; allowed: 0..{NUM_ACTIONS - 1} (0 no-op, 1 + 13 * s stone s into the "
            f"cauldron, 2 + 13 * s + p stone s into potion p; s in 0..2, p in 0..11)"
        )
    return actions.astype(np.intp, copy=False)


def _observation_space(see_chemistry: bool) -> spaces.Box:
    # Perceived coordinates and values lie in [-1, 1]; the used-item sentinels are 1.0 and 2.0.
    low, high = np.full(OBS_SIZE, -1.0, dtype=np.float32), np.full(OBS_SIZE, 2.0, dtype=np.float32)
    if see_chemistry:
        low = np.concatenate([low, np.zeros(CHEMISTRY_VECTOR_SIZE, dtype=np.float32)])
        high = np.concatenate([high, np.ones(CHEMISTRY_VECTOR_SIZE, dtype=np.float32)])
    return spaces.Box(low, high, dtype=np.float32)


# --- levels and chemistries: internal forms -------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class LevelConfig:
    """What a level randomises (§7): the maps, the graph (candidates and their prior), the rotation."""

    randomized_maps: bool
    graph_candidates: tuple[int, ...]  # indices into VALID_GRAPHS
    graph_prior: np.ndarray  # float32, one probability per candidate
    rotation: bool


@functools.lru_cache(maxsize=None)
def _level_config(base: str) -> LevelConfig:
    if "random_bottleneck" in base:
        candidates, prior = tuple(range(NUM_GRAPHS)), RANDOM_BOTTLENECK_PRIOR
    else:
        fixed = next((g for name, g in BOTTLENECK_GRAPHS.items() if name in base), FULL_CUBE)
        candidates, prior = (fixed,), np.ones(1, dtype=np.float32)
    return LevelConfig("perceptual_mapping_randomized" in base, candidates, prior, "rotation" in base)


class ChemistryIndices(NamedTuple):
    """A batch of chemistries as integer arrays (n,): the env's internal form."""

    potion_map: np.ndarray  # 0..47 = 8 * permutation index + sign bits of potion_dir_map
    stone_map: np.ndarray  # 0..7 = sign bits of stone_dir_map
    graph: np.ndarray  # 0..108, index into VALID_GRAPHS
    rotation: np.ndarray  # 0..3


# dm_alchemy's legacy RandomState (seed-exact sampling, §12) or gymnasium's Generator (the envs).
Rng = np.random.Generator | np.random.RandomState


def _draw_integers(rng: Rng, high: int, size: int | tuple[int, ...]) -> np.ndarray:
    if isinstance(rng, np.random.RandomState):
        return np.asarray(rng.randint(0, high, size=size), dtype=np.int64)
    return rng.integers(0, high, size=size, dtype=np.int64)


def _sample_chemistry_indices(level: str, n: int, rng: Rng) -> ChemistryIndices:
    """Draw n chemistries of a level. With a RandomState and n = 1 the draws are dm_alchemy's (§12)."""
    config = level_config(level)
    zeros = np.zeros(n, dtype=np.int64)
    if config.randomized_maps:
        potion_map, stone_map = _draw_integers(rng, NUM_POTION_MAPS, n), _draw_integers(rng, NUM_STONE_MAPS, n)
    else:
        potion_map, stone_map = zeros + FIXED_POTION_MAP, zeros + FIXED_STONE_MAP
    # A fixed graph is a draw from a one-candidate prior: it still consumes a random number, as in dm_alchemy.
    candidate = rng.choice(len(config.graph_candidates), size=n, p=config.graph_prior)
    graph = np.asarray(config.graph_candidates, dtype=np.int64)[candidate]
    rotation = np.asarray(rng.choice(NUM_ROTATIONS, size=n), dtype=np.int64) if config.rotation else zeros
    return ChemistryIndices(potion_map, stone_map, graph, rotation)


def _indices_to_chemistry(indices: ChemistryIndices) -> dict[str, np.ndarray]:
    dim_map, dir_map = _potion_map_parts(indices.potion_map)
    return {
        "potion_dim_map": dim_map,
        "potion_dir_map": dir_map,
        "stone_dir_map": _signs_from_bits(indices.stone_map),
        "graph_edges": VALID_GRAPHS[indices.graph],
        "rotation": np.asarray(indices.rotation, dtype=np.int64),
    }


def _fields(
    mapping: Mapping[str, Any], what: str, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[list[np.ndarray], int | None]:
    """The fields of a canonical dict as int64 arrays, each of its shape or with one leading batch axis.

    A list of unbatched dicts counts as a batch. Returns the arrays and the batch size (None when no field
    has a batch axis)."""
    if isinstance(mapping, (list, tuple)) and mapping and all(isinstance(m, Mapping) for m in mapping):
        parts = [_fields(m, f"{what}[{i}]", shapes) for i, m in enumerate(mapping)]
        if any(n is not None for _, n in parts):
            raise ValueError(f"{what} given as a list must hold dicts without a batch axis")
        return [np.stack(field) for field in zip(*(arrays for arrays, _ in parts))], len(mapping)
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a dict with keys {', '.join(shapes)} (or a list of such dicts), "
                         f"got {type(mapping).__name__}")
    arrays, sizes = [], {}
    for key, shape in shapes.items():
        if key not in mapping:
            raise ValueError(f"{what} lacks {key!r}; required keys: {', '.join(shapes)}")
        value = np.asarray(mapping[key])
        batched = value.ndim == len(shape) + 1
        if value.shape[batched:] != shape:
            batched_shape = str(("n",) + shape).replace("'", "")
            raise ValueError(f"{what} {key} must have shape {shape} or {batched_shape}, got {value.shape}")
        if not (np.issubdtype(value.dtype, np.integer) or value.dtype == bool):
            raise ValueError(f"{what} {key} must be integers, got dtype {value.dtype}")
        if batched:
            sizes[key] = len(value)
        arrays.append(value.astype(np.int64))
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{what} fields have different batch sizes: {sizes}")
    return arrays, next(iter(sizes.values()), None)


def _broadcast(arrays: list[np.ndarray], shapes: Mapping[str, tuple[int, ...]], what: str, n: int | None,
               num_envs: int | None) -> list[np.ndarray]:
    """Give every field the leading axis num_envs (or n, or 1): a field without one is shared."""
    if n is not None and num_envs is not None and n != num_envs:
        raise ValueError(f"{what} has batch size {n}, expected {num_envs} (one per env) or no batch axis")
    size = n if n is not None else (num_envs or 1)
    return [np.broadcast_to(a, (size,) + shape) for a, shape in zip(arrays, shapes.values())]


def _check_values(name: str, value: np.ndarray, allowed: Sequence[int], allowed_text: str) -> None:
    bad = ~np.isin(value, allowed)
    if bad.any():
        raise ValueError(f"{name} has value {value[bad].flat[0]} in {value.tolist()}; allowed: {allowed_text}")


def _item_indices(items: Mapping[str, Any], num_envs: int | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate canonical items (§8, optionally batched) -> stone vertices (n, 10, 3), potions (n, 10, 12)."""
    arrays, n = _fields(items, "items", _ITEM_SHAPES)
    stones, potions = _broadcast(arrays, _ITEM_SHAPES, "items", n, num_envs)
    _check_values("stones_latent", stones, (-1, 1), "latent coordinates -1 or +1")
    _check_values("potions_latent[..., 0] (latent axis)", potions[..., 0], range(NUM_AXES), "0, 1 or 2")
    _check_values("potions_latent[..., 1] (latent sign)", potions[..., 1], (-1, 1), "-1 or +1")
    vertex = _bits_from_signs(stones)
    latent_potion = 2 * potions[..., 0] + (potions[..., 1] + 1) // 2
    return vertex, latent_potion, n is not None


def _indices_to_items(vertex: np.ndarray, latent_potion: np.ndarray) -> dict[str, np.ndarray]:
    return {"stones_latent": VERTEX_COORDS[vertex], "potions_latent": LATENT_POTIONS[latent_potion]}


def _draw_items(rng: Rng, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Items of trials of the given shape: stones uniform over the 8 vertices, then potions uniform over
    the 6 latent potions, independent (§8). One trial at a time with a RandomState is §12's order."""
    stones = _draw_integers(rng, NUM_VERTICES, shape + (NUM_STONES,))
    return stones, _draw_integers(rng, NUM_LATENT_POTIONS, shape + (NUM_POTIONS,))


def _unbatch(chemistry: Mapping[str, np.ndarray], row: int = 0) -> dict[str, Any]:
    """One chemistry of a batch (the first by default), without the batch axis (rotation as a Python int)."""
    return {key: int(value[row]) if key == "rotation" else value[row] for key, value in chemistry.items()}


def _chemistry_tasks(chemistries: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """A batch of chemistries as tasks, one {"chemistry": canonical dict} per row."""
    return [{"chemistry": _unbatch(chemistries, row)} for row in range(len(chemistries["rotation"]))]


def _chemistry_vector_of_indices(indices: ChemistryIndices) -> np.ndarray:
    """(n, 28) float32 ground-truth vectors (§11)."""
    def zero_one(signs: np.ndarray) -> np.ndarray:
        return ((signs + 1) // 2).astype(np.float32)

    dim_map, dir_map = _potion_map_parts(indices.potion_map)
    return np.concatenate(
        [
            VALID_GRAPHS[indices.graph].astype(np.float32),
            np.eye(len(PERMUTATIONS), dtype=np.float32)[indices.potion_map // 8],
            zero_one(dir_map),
            zero_one(_signs_from_bits(indices.stone_map)),
            np.eye(NUM_ROTATIONS, dtype=np.float32)[indices.rotation],
        ],
        axis=1,
    )


# ==================================================================================================
# Tables: the game's codes and the lookup tables of §1-§10, computed once at import and read-only.
# ==================================================================================================


# --- state and target codes (§9.2) ----------------------------------------------------------------

USED_STONE = NUM_VERTICES  # stone state 0..7 = vertex n(x), 8 = in the cauldron
USED_POTION = NUM_LATENT_POTIONS  # potion state 0..5 = latent index, 6 = drunk
# What an action does to the stone it names, given the potion slot's state: 0..5 a latent potion,
# USED_POTION an empty potion slot (nothing happens, §9.2 case 4), or one of these two.
TARGET_CAULDRON = 7
TARGET_NOTHING = 8  # the no-op
NUM_TARGETS = 9
NUM_STONE_STATES = NUM_VERTICES + 1
NUM_POTION_STATES = NUM_LATENT_POTIONS + 1


# --- the cube (§1, §2, §3.1) ----------------------------------------------------------------------

# Vertex n has coordinate +1 on axis k iff bit k of n is set.
VERTEX_COORDS = np.array(
    [[1 if (n >> k) & 1 else -1 for k in range(NUM_AXES)] for n in range(NUM_VERTICES)], dtype=np.int64
)
VERTEX_VALUE = VERTEX_COORDS.sum(1)  # v(x): -3, -1, +1 or +3
# Latent potion q = 2 * axis + (sign + 1) / 2, as (axis, sign).
LATENT_POTIONS = np.array([(q // 2, 1 if q % 2 else -1) for q in range(NUM_LATENT_POTIONS)], dtype=np.int64)
# Edges: vertex pairs i < j differing in one coordinate, in lexicographic order.
CUBE_EDGES = np.array(
    [(i, j) for i in range(NUM_VERTICES) for j in range(i + 1, NUM_VERTICES) if bin(i ^ j).count("1") == 1],
    dtype=np.int64,
)
EDGE_AXIS = np.log2(CUBE_EDGES[:, 1] - CUBE_EDGES[:, 0]).astype(np.int64)
NUM_EDGES = len(CUBE_EDGES)
_EDGE_OF_PAIR = np.full((NUM_VERTICES, NUM_VERTICES), -1, dtype=np.int64)  # undirected: both orders
_EDGE_OF_PAIR[CUBE_EDGES[:, 0], CUBE_EDGES[:, 1]] = np.arange(NUM_EDGES)
_EDGE_OF_PAIR[CUBE_EDGES[:, 1], CUBE_EDGES[:, 0]] = np.arange(NUM_EDGES)
# Canonical forms (§7, §8): field -> shape of one chemistry / one episode's items.
_CHEMISTRY_SHAPES = {"potion_dim_map": (NUM_AXES,), "potion_dir_map": (NUM_AXES,), "stone_dir_map": (NUM_AXES,),
                     "graph_edges": (NUM_EDGES,), "rotation": ()}
_ITEM_SHAPES = {"stones_latent": (NUM_TRIALS, NUM_STONES, NUM_AXES), "potions_latent": (NUM_TRIALS, NUM_POTIONS, 2)}

# --- graphs (§3.2, §3.3) --------------------------------------------------------------------------

ANY = None  # the "*" of a constraint: the edge exists whatever that coordinate is
_CONSTRAINT_VALUES = (-1, 1, ANY)
# One axis's constraint (ca, cb) on its two other axes a < b; ca varies slowest, as §3.3 orders them.
_AXIS_CONSTRAINTS = tuple(itertools.product(_CONSTRAINT_VALUES, repeat=2))


def graph_edges_from_constraints(constraints: Sequence[tuple[int | None, int | None]]) -> np.ndarray:
    """The edge set (bool[12], §3.1 order) of a constraint triple, one (ca, cb) per axis."""
    edges = np.zeros(NUM_EDGES, dtype=bool)
    for e, (i, _) in enumerate(CUBE_EDGES):
        axis = EDGE_AXIS[e]
        other_axes = [k for k in range(NUM_AXES) if k != axis]
        edges[e] = all(c is ANY or VERTEX_COORDS[i, k] == c for k, c in zip(other_axes, constraints[axis]))
    return edges


def _is_connected(edges: np.ndarray) -> bool:
    reached = {0}
    frontier = [0]
    while frontier:  # graph search over the 8 vertices
        v = frontier.pop()
        for i, j in CUBE_EDGES[edges]:
            for a, b in ((i, j), (j, i)):
                if a == v and b not in reached:
                    reached.add(b)
                    frontier.append(b)
    return len(reached) == NUM_VERTICES


def edges_to_mask(edges: np.ndarray) -> np.ndarray:
    """12-bit mask(s) of edge sets: bit e set iff edge e exists. Works on (..., 12)."""
    return (np.asarray(edges, dtype=np.int64) << np.arange(NUM_EDGES)).sum(-1)


def _enumerate_valid_graphs() -> tuple[np.ndarray, np.ndarray]:
    """The 109 valid edge sets in §3.3's order, and how many entries each constraint triple fixes."""
    graphs, num_fixed = [], []
    for triple in itertools.product(_AXIS_CONSTRAINTS, repeat=NUM_AXES):  # axis 0 outermost
        edges = graph_edges_from_constraints(triple)
        if _is_connected(edges):
            graphs.append(edges)
            num_fixed.append(sum(c is not ANY for pair in triple for c in pair))
    return np.array(graphs), np.array(num_fixed)


VALID_GRAPHS, GRAPH_NUM_CONSTRAINTS = _enumerate_valid_graphs()  # (109, 12) bool, (109,) in 0..3
VALID_GRAPH_MASKS = edges_to_mask(VALID_GRAPHS)
NUM_GRAPHS = len(VALID_GRAPHS)
_GRAPH_INDEX_OF_MASK = np.full(1 << NUM_EDGES, -1, dtype=np.int64)
_GRAPH_INDEX_OF_MASK[VALID_GRAPH_MASKS] = np.arange(NUM_GRAPHS)
# Random-bottleneck prior: each number of constraints k gets mass 1/4, shared equally by its graphs.
# float32 because dm_alchemy's array is, and seed-exact sampling (§12) depends on its rounding.
_graphs_per_k = np.bincount(GRAPH_NUM_CONSTRAINTS)
RANDOM_BOTTLENECK_PRIOR = (1.0 / (4.0 * _graphs_per_k[GRAPH_NUM_CONSTRAINTS])).astype(np.float32)
FULL_CUBE = int(_GRAPH_INDEX_OF_MASK[(1 << NUM_EDGES) - 1])
# Fixed bottleneck graphs of §3.3 (bottleneck3 keeps bottleneck1's axis-0 edge and needs x1 = -1
# on axis 2).
BOTTLENECK_GRAPHS = {
    name: int(_GRAPH_INDEX_OF_MASK[edges_to_mask(graph_edges_from_constraints(constraints))])
    for name, constraints in {
        "bottleneck1": ((-1, 1), (ANY, ANY), (ANY, ANY)),
        "bottleneck2": ((-1, ANY), (ANY, ANY), (ANY, ANY)),
        "bottleneck3": ((-1, 1), (ANY, ANY), (ANY, -1)),
    }.items()
}

# --- potion maps, stone maps, rotations (§4, §5, §6) ----------------------------------------------

PERMUTATIONS = np.array(list(itertools.permutations(range(NUM_AXES))), dtype=np.int64)  # lexicographic
NUM_POTION_MAPS = len(PERMUTATIONS) * 2**NUM_AXES  # 48: index = 8 * permutation + sign bits of D
NUM_STONE_MAPS = 2**NUM_AXES  # 8: sign bits of M
NUM_ROTATIONS = 4
# The maps of levels without "perceptual_mapping_randomized": P = (0, 1, 2) (permutation 0),
# D = M = (+1, +1, +1) (all sign bits set).
FIXED_POTION_MAP = 0 * 8 + 0b111
FIXED_STONE_MAP = 0b111
# Rr of §6: perceived stone coordinates = inverse(Rr) @ aligned coordinates.
ROTATION_MATRICES = np.array(
    [
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[1, 1, 0], [-1, 1, 0], [0, 0, 1]],
        [[1, 0, -1], [0, 1, 0], [1, 0, 1]],
        [[1, 0, 0], [0, 1, 1], [0, -1, 1]],
    ],
    dtype=np.int64,
)


def _signs_from_bits(index: np.ndarray) -> np.ndarray:
    """(..., 3) signs: +1 on axis k iff bit k of index is set (§12's encoding of D and M)."""
    return np.where((np.asarray(index)[..., None] >> np.arange(NUM_AXES)) & 1, 1, -1)


def _bits_from_signs(signs: np.ndarray) -> np.ndarray:
    return (((np.asarray(signs) + 1) // 2) << np.arange(NUM_AXES)).sum(-1)


def _potion_map_parts(potion_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """potion_dim_map P (..., 3) and potion_dir_map D (..., 3) of potion-map indices."""
    potion_map = np.asarray(potion_map)
    return PERMUTATIONS[potion_map // 8], _signs_from_bits(potion_map % 8)


# --- tables the step reads ------------------------------------------------------------------------


def _next_stone_table() -> np.ndarray:
    """int (109, 9 stone states, 9 targets): the stone's state after the action (§9.2)."""
    table = np.empty((NUM_GRAPHS, NUM_STONE_STATES, NUM_TARGETS), dtype=np.int64)
    table[:] = np.arange(NUM_STONE_STATES)[None, :, None]  # by default nothing happens
    table[:, :NUM_VERTICES, TARGET_CAULDRON] = USED_STONE
    for q, (axis, sign) in enumerate(LATENT_POTIONS):
        for n in range(NUM_VERTICES):
            if VERTEX_COORDS[n, axis] != sign:  # a potion only moves a stone that is on the other side
                moved = n ^ (1 << axis)
                table[:, n, q] = np.where(VALID_GRAPHS[:, _EDGE_OF_PAIR[n, moved]], moved, n)
    return table


# An "outcome" is stone state * 9 + target: everything the reward and the potion's fate depend on.
_STONE_OF_OUTCOME, _TARGET_OF_OUTCOME = np.divmod(np.arange(NUM_STONE_STATES * NUM_TARGETS), NUM_TARGETS)
_OUTCOME_STONE_PRESENT = _STONE_OF_OUTCOME < NUM_VERTICES
# The cauldron pays R(x) = v(x), +12 at (+1, +1, +1) (§1.2).
_CAULDRON_REWARD = np.append(VERTEX_VALUE + BONUS * (VERTEX_VALUE == NUM_AXES), 0.0)
REWARD_OF_OUTCOME = np.where(
    _OUTCOME_STONE_PRESENT & (_TARGET_OF_OUTCOME == TARGET_CAULDRON), _CAULDRON_REWARD[_STONE_OF_OUTCOME], 0.0
)
# A present potion is drunk whenever a present stone goes into it, even if nothing happens (§13).
POTION_DRUNK_BY_OUTCOME = _OUTCOME_STONE_PRESENT & (_TARGET_OF_OUTCOME < NUM_LATENT_POTIONS)
NEXT_STONE = _next_stone_table().reshape(-1)  # index: graph * 81 + outcome

# Decoding of the 40 actions (§9.1); the no-op reads stone slot 0 and potion slot 0 and changes nothing.
ACTION_STONE_SLOT, _place_of_action = np.divmod(np.maximum(np.arange(NUM_ACTIONS) - 1, 0), NUM_POTIONS + 1)
ACTION_POTION_SLOT = np.maximum(_place_of_action - 1, 0)  # place 0 is the cauldron, place p + 1 potion p
# The target as a function of (action, state of the named potion slot), flattened as action * 7 + state.
_action_target = np.tile(np.arange(NUM_POTION_STATES), (NUM_ACTIONS, 1))
_action_target[_place_of_action == 0] = TARGET_CAULDRON
_action_target[0] = TARGET_NOTHING
ACTION_TARGET = _action_target.reshape(-1)


def _stone_feature_table() -> np.ndarray:
    """float32 (8 stone maps * 4 rotations * 9 states, 5): the observation block of a stone (§10)."""
    table = np.empty((NUM_STONE_MAPS, NUM_ROTATIONS, NUM_STONE_STATES, STONE_FEATURES), dtype=np.float64)
    for stone_map in range(NUM_STONE_MAPS):
        aligned = VERTEX_COORDS * _signs_from_bits(stone_map)  # (8, 3), §5
        for rotation in range(NUM_ROTATIONS):
            perceived = np.linalg.solve(ROTATION_MATRICES[rotation], aligned.T).T  # exact: halves of +-2 or 0
            table[stone_map, rotation, :NUM_VERTICES, :NUM_AXES] = np.rint(perceived)
            table[stone_map, rotation, :NUM_VERTICES, NUM_AXES] = VERTEX_VALUE / 3.0  # value without bonus
            table[stone_map, rotation, :NUM_VERTICES, NUM_AXES + 1] = 0.0
    table[:, :, USED_STONE] = (2.0, 2.0, 2.0, 2.0, 1.0)  # used-stone sentinel
    return table.astype(np.float32).reshape(-1, STONE_FEATURES)


def _potion_feature_table() -> np.ndarray:
    """float32 (48 potion maps * 7 states, 2): the observation block of a potion (§4, §10)."""
    table = np.empty((NUM_POTION_MAPS, NUM_POTION_STATES, POTION_FEATURES), dtype=np.float64)
    dim_map, dir_map = _potion_map_parts(np.arange(NUM_POTION_MAPS))
    inverse_dim_map = np.argsort(dim_map, axis=1)  # perceived axis of each latent axis
    for q, (axis, sign) in enumerate(LATENT_POTIONS):
        perceived_sign = sign * dir_map[:, axis]
        colour = 2 * inverse_dim_map[:, axis] + (perceived_sign + 1) // 2
        table[:, q] = np.stack([colour / 3.0 - 1.0, np.zeros(NUM_POTION_MAPS)], axis=1)
    table[:, USED_POTION] = (1.0, 1.0)  # used-potion sentinel
    return table.astype(np.float32).reshape(-1, POTION_FEATURES)


STONE_FEATURE_ROWS = _stone_feature_table()  # row: (stone_map * 4 + rotation) * 9 + stone state
POTION_FEATURE_ROWS = _potion_feature_table()  # row: potion_map * 7 + potion state

for _table in (VERTEX_COORDS, VERTEX_VALUE, LATENT_POTIONS, CUBE_EDGES, EDGE_AXIS, VALID_GRAPHS, VALID_GRAPH_MASKS,
               RANDOM_BOTTLENECK_PRIOR, PERMUTATIONS, ROTATION_MATRICES, NEXT_STONE, REWARD_OF_OUTCOME,
               POTION_DRUNK_BY_OUTCOME, ACTION_STONE_SLOT, ACTION_POTION_SLOT, ACTION_TARGET,
               STONE_FEATURE_ROWS, POTION_FEATURE_ROWS):
    _table.flags.writeable = False  # shared by every env: guard against accidental in-place edits


gymnasium.register(
    id="SymbolicAlchemy-v0",
    entry_point="alchemy_env:SymbolicAlchemyEnv",
    vector_entry_point="alchemy_env:SymbolicAlchemyVectorEnv",
)
