"""Device-resident envs (``recurrl.envs.device``, ``env.vectorization: torch``).

Each torch env is held to its numpy vector env: copy ``i`` of both, seeded alike, plays the same
episodes for the same actions (observations, rewards, flags, final observations) over hundreds
of random steps with many episode ends; its state loads into a new env (or from the numpy env's)
and continues identically; a step reads no tensor value on the host (no ``.item()``, no
boolean-mask indexing), so it can run in a CUDA graph. On CPU tensors here; the CUDA cases run
where a GPU is.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from torch.utils._python_dispatch import TorchDispatchMode

import recurrl.envs  # noqa: F401  (registers the recurrl/* ids)
from recurrl.algo.make_env import make_vector_env
from recurrl.config import ConfigError, EnvConfig, load_config
from recurrl.envs import core
from recurrl.envs.bandit import BanditVectorEnv
from recurrl.envs.cartpole import CartPoleNoVelocityVectorEnv
from recurrl.envs.cue_recall import CueRecallVectorEnv
from recurrl.envs.device import TORCH_VECTOR_ENVS, make_torch_vector_env
from recurrl.envs.device.core import below, draw, mix64, uniform
from recurrl.envs.memory_grid import MemoryGridVectorEnv
from recurrl.envs.point_recall import PointRecallVectorEnv
from recurrl.envs.repeat_previous import RepeatPreviousVectorEnv
from recurrl.envs.sequence_recall import SequenceRecallVectorEnv
from recurrl.envs.tmaze import TMazeVectorEnv

NUMPY = {
    "recurrl/TMaze-v0": TMazeVectorEnv,
    "recurrl/RepeatPrevious-v0": RepeatPreviousVectorEnv,
    "recurrl/CartPoleNoVelocity-v0": CartPoleNoVelocityVectorEnv,
    "recurrl/CueRecall-v0": CueRecallVectorEnv,
    "recurrl/SequenceRecall-v0": SequenceRecallVectorEnv,
    "recurrl/MemoryGrid-v0": MemoryGridVectorEnv,
    "recurrl/Bandit-v0": BanditVectorEnv,
    "recurrl/PointRecall-v0": PointRecallVectorEnv,
}

CASES = [  # (id, constructor kwargs): short episodes, so that hundreds of steps end many
    ("recurrl/TMaze-v0", {"length": 3}),
    ("recurrl/TMaze-v0", {"length": 2, "time_budget": 4, "max_episode_steps": 3}),
    ("recurrl/RepeatPrevious-v0", {"lag": 2, "length": 5}),
    ("recurrl/RepeatPrevious-v0", {"num_symbols": 7, "lag": 1, "length": 9}),
    ("recurrl/CartPoleNoVelocity-v0", {"max_episode_steps": 500}),
    ("recurrl/CartPoleNoVelocity-v0", {"max_episode_steps": 40, "sutton_barto_reward": True}),
    ("recurrl/CueRecall-v0", {"num_bits": 3, "delay": 2}),
    ("recurrl/CueRecall-v0", {"num_bits": 64, "delay": 0}),
    ("recurrl/SequenceRecall-v0", {"length": 3, "num_symbols": 5}),
    ("recurrl/MemoryGrid-v0", {"length": 1, "view": 3, "time_budget": 6}),
    ("recurrl/MemoryGrid-v0", {"length": 4, "num_colors": 3, "max_episode_steps": 9}),
    ("recurrl/Bandit-v0", {"num_arms": 3, "horizon": 4}),
    ("recurrl/Bandit-v0", {"horizon": 6, "observe_previous": False}),
    ("recurrl/PointRecall-v0", {"delay": 1, "travel_steps": 9}),
]
IDS = [f"{env_id.split('/')[1]}-{i}" for i, (env_id, _) in enumerate(CASES)]


def pair(env_id: str, kwargs: dict, num_envs: int = 12, device: str = "cpu"):
    return NUMPY[env_id](num_envs=num_envs, **kwargs), TORCH_VECTOR_ENVS[env_id](
        num_envs=num_envs, device=device, **kwargs
    )


def _close(actual, desired, err_msg: str = "") -> None:
    np.testing.assert_allclose(actual, desired, rtol=1e-6, atol=1e-6, err_msg=err_msg)


def assert_same_step(ref_out, out, where: str, exact: bool = True) -> None:
    obs, reward, terminated, truncated, info = ref_out
    t_obs, t_reward, t_terminated, t_truncated, t_info = out
    assert t_reward.dtype == torch.float32, where
    assert t_terminated.dtype == torch.bool and t_truncated.dtype == torch.bool, where
    assert t_obs.dtype == torch.from_numpy(obs).dtype, where
    equal = np.testing.assert_array_equal if exact else _close
    equal(t_obs.cpu().numpy(), obs, err_msg=where)
    equal(t_reward.cpu().numpy(), reward.astype(np.float32), err_msg=where)
    np.testing.assert_array_equal(t_terminated.cpu().numpy(), terminated, err_msg=where)
    np.testing.assert_array_equal(t_truncated.cpu().numpy(), truncated, err_msg=where)
    ended = info.get("_final_obs", np.zeros(len(obs), dtype=bool))
    np.testing.assert_array_equal(t_info["_final_obs"].cpu().numpy(), ended, err_msg=where)
    final = t_info["final_obs"].cpu().numpy()
    if ended.any():
        equal(final[ended], info["final_obs"][ended], err_msg=where)
    equal(final[~ended], obs[~ended], err_msg=where)  # dense: the step's observation there


def random_actions(rng: np.random.Generator, space, num_envs: int) -> np.ndarray:
    if isinstance(space, gym.spaces.Box):  # some beyond the bounds: the env clips them
        return rng.uniform(-1.3, 1.3, size=(num_envs, *space.shape)).astype(np.float32)
    return rng.integers(0, space.n, size=num_envs)


def is_exact(ref) -> bool:
    """Whether the torch env must match the numpy env ``ref`` bit for bit (not PointRecall:
    float64 cos, sin and hypot from torch's math library may differ in the last bit)."""
    return not isinstance(ref, PointRecallVectorEnv)


def run_both(ref, env, steps: int, seed: int = 0) -> int:
    """Step both with the same random actions (numpy and tensor in turn); the episodes ended."""
    rng = np.random.default_rng(seed)
    ended = 0
    for t in range(steps):
        actions = random_actions(rng, ref.single_action_space, ref.num_envs)
        ref_out = ref.step(actions)
        out = env.step(actions if t % 2 else torch.as_tensor(actions, device=env.device))
        assert_same_step(ref_out, out, f"step {t}", is_exact(ref))
        ended += int(out[4]["_final_obs"].sum())
    return ended


@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=IDS)
def test_same_episodes_as_the_numpy_env(env_id, kwargs):
    ref, env = pair(env_id, kwargs)
    obs, _ = ref.reset(seed=7)
    t_obs, info = env.reset(seed=7)
    assert info == {} and t_obs.dtype == torch.from_numpy(obs).dtype
    (np.testing.assert_array_equal if is_exact(ref) else _close)(t_obs.numpy(), obs)
    ended = run_both(ref, env, 400 if "CartPole" not in env_id else 700)
    assert ended >= 100


def test_seed_lists_and_reset_masks_as_the_numpy_env():
    ref, env = pair("recurrl/TMaze-v0", {"length": 2})
    seeds = [5, 1, 99, 2**70, 3, 3, 0, 11, 12, 13, 14, 15]
    np.testing.assert_array_equal(env.reset(seed=seeds)[0].numpy(), ref.reset(seed=seeds)[0])
    run_both(ref, env, 20)
    mask = np.arange(12) % 3 == 0
    obs = ref.reset(seed=4, options={"reset_mask": mask})[0]
    t_obs = env.reset(seed=4, options={"reset_mask": torch.from_numpy(mask)})[0]
    np.testing.assert_array_equal(t_obs.numpy(), obs)
    run_both(ref, env, 50, seed=1)
    with pytest.raises(ValueError, match="3 seeds"):
        env.reset(seed=[1, 2, 3])
    ref, env = pair("recurrl/CartPoleNoVelocity-v0", {})
    np.testing.assert_array_equal(env.reset(seed=seeds)[0].numpy(), ref.reset(seed=seeds)[0])
    bounds = {"reset_mask": mask, "low": -0.2, "high": 0.2}
    np.testing.assert_array_equal(
        env.reset(options=bounds)[0].numpy(), ref.reset(options=bounds)[0]
    )
    run_both(ref, env, 200)


@pytest.mark.parametrize(("env_id", "kwargs"), CASES[::2], ids=IDS[::2])
def test_spaces_and_metadata_are_the_numpy_envs(env_id, kwargs):
    ref, env = pair(env_id, kwargs, num_envs=5)
    assert env.single_observation_space == ref.single_observation_space
    assert env.single_action_space == ref.single_action_space
    assert env.observation_space == ref.observation_space
    assert env.action_space == ref.action_space
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.num_envs == 5 and env.device == torch.device("cpu")
    assert env.can_truncate == (kwargs.get("max_episode_steps") is not None)


@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=IDS)
def test_state_restores_mid_run_and_matches_the_numpy_envs(env_id, kwargs):
    ref, env = pair(env_id, kwargs)
    ref.reset(seed=3)
    env.reset(seed=3)
    run_both(ref, env, 37)
    state = env.get_state()
    assert not any(isinstance(v, torch.Tensor) for v in _leaves(state))
    _assert_same_tree(state, ref.get_state(), is_exact(ref))
    # A new torch env from the torch state, another from the numpy env's state: all continue
    # alike (the torch state loads into the numpy env too).
    restored = TORCH_VECTOR_ENVS[env_id](num_envs=12, **kwargs)
    restored.set_state(state)
    from_numpy = TORCH_VECTOR_ENVS[env_id](num_envs=12, **kwargs)
    from_numpy.set_state(ref.get_state())
    ref_copy = NUMPY[env_id](num_envs=12, **kwargs)
    ref_copy.set_state(state)
    rng = np.random.default_rng(9)
    for t in range(150):
        actions = random_actions(rng, ref.single_action_space, 12)
        ref_out = _as_tensors(ref.step(actions))  # the numpy env is not the reference here:
        out = env.step(actions)  # the restored envs must continue exactly as the originals
        for other, name in [(restored, "restored"), (from_numpy, "from numpy")]:
            _assert_same_tensors(out, other.step(actions), f"{name}, step {t}")
        _assert_same_tensors(ref_out, _as_tensors(ref_copy.step(actions)), f"numpy, step {t}")
        assert_same_step(_as_arrays(ref_out), out, f"step {t}", is_exact(ref))
    with pytest.raises(ValueError, match="shape"):
        TORCH_VECTOR_ENVS[env_id](num_envs=3, **kwargs).set_state(state)


def test_unseeded_resets_draw_from_np_random_and_restore():
    env = make_torch_vector_env("recurrl/TMaze-v0", 6, length=2)
    env.reset()
    env.step(torch.zeros(6, dtype=torch.int64))
    state = env.get_state()
    again = make_torch_vector_env("recurrl/TMaze-v0", 6, length=2)
    again.set_state(state)
    for _ in range(10):
        env.reset()  # later unseeded resets start new episodes of the same keys
        again.reset()
        a = torch.randint(0, 3, (6,))
        assert all(
            torch.equal(x, y) for x, y in zip(env.step(a)[:4], again.step(a)[:4], strict=True)
        )


class _HostReads(TorchDispatchMode):
    """Records the ops that read tensor values on the host or allocate data-dependent shapes."""

    FORBIDDEN = ("_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "index_put")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__
        if any(bad in name for bad in self.FORBIDDEN):
            self.seen.append(name)
        if "index" in name and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for arg in args
            if isinstance(arg, list | tuple)
            for i in arg
        ):
            self.seen.append(f"{name} (bool mask)")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=IDS)
def test_step_reads_nothing_on_the_host(env_id, kwargs):
    _, env = pair(env_id, kwargs, num_envs=8)
    env.reset(seed=0)
    actions = torch.as_tensor(random_actions(np.random.default_rng(0), env.single_action_space, 8))
    for _ in range(12):  # some copies end (CartPole: none does; its autoreset runs anyway)
        with _HostReads() as mode:
            env.step(actions)
        assert mode.seen == [], mode.seen


def test_rng_matches_envs_core_bit_for_bit():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**64, size=257, dtype=np.uint64)
    values[:4] = [0, 1, 2**63, 2**64 - 1]
    tensor = torch.from_numpy(values.view(np.int64).copy())
    for ours, theirs in [
        (mix64(tensor), core.mix64(values)),
        (draw(tensor, 5), core.draw(values, 5)),
        (draw(tensor, core.EPISODE_STREAM), core.draw(values, core.EPISODE_STREAM)),
        (draw(tensor, torch.arange(257) - 3), core.draw(values, np.arange(257) - 3)),
    ]:
        np.testing.assert_array_equal(ours.numpy().view(np.uint64), theirs)
    np.testing.assert_array_equal(uniform(tensor).numpy(), core.uniform(values))
    for n in (2, 3, 7, 1000, 2**31 - 1):
        np.testing.assert_array_equal(below(tensor, n).numpy(), core.below(values, n))


def test_constructor_arguments_are_checked_like_the_numpy_envs():
    for env_id, bad in [
        ("recurrl/TMaze-v0", {"length": 0}),
        ("recurrl/TMaze-v0", {"length": 5, "time_budget": 3}),
        ("recurrl/RepeatPrevious-v0", {"lag": 4, "length": 4}),
        ("recurrl/CartPoleNoVelocity-v0", {"max_episode_steps": 0}),
    ]:
        with pytest.raises(ValueError) as numpy_error:
            NUMPY[env_id](num_envs=2, **bad)
        with pytest.raises(ValueError) as torch_error:
            TORCH_VECTOR_ENVS[env_id](num_envs=2, **bad)
        assert str(torch_error.value) == str(numpy_error.value)
    with pytest.raises(TypeError, match="lenth"):
        make_torch_vector_env("recurrl/TMaze-v0", 2, lenth=3)
    with pytest.raises(KeyError, match="recurrl/TMaze-v0"):
        make_torch_vector_env("recurrl/PendulumNoVelocity-v0", 2)


# --- env.vectorization: torch ---------------------------------------------------------------


def test_make_vector_env_builds_the_torch_env_on_the_device():
    config = load_config(None, ["env.vectorization=torch", "env.num_envs=3"]).env
    envs = make_vector_env(config, device="cpu")
    assert type(envs) is TORCH_VECTOR_ENVS[config.id]
    assert envs.device == torch.device("cpu") and envs.num_envs == 3
    assert envs.max_episode_steps == 500  # the id's registered time limit
    tmaze = EnvConfig(id="recurrl/TMaze-v0", kwargs={"length": 4}, vectorization="torch")
    envs = make_vector_env(tmaze, 2, device=torch.device("cpu"))
    assert envs.length == 4 and envs.max_episode_steps is None and envs.num_envs == 2


def test_torch_vectorization_refusals_name_the_key():
    with pytest.raises(
        ConfigError, match="env.vectorization: recurrl/PendulumNoVelocity-v0 has no torch"
    ) as e:
        make_vector_env(EnvConfig(id="recurrl/PendulumNoVelocity-v0", vectorization="torch"))
    assert all(env_id in str(e.value) for env_id in TORCH_VECTOR_ENVS)
    flicker = [{"path": "recurrl.envs.wrappers:Flicker", "kwargs": {"p": 0.1}}]
    with pytest.raises(ConfigError, match="env.vectorization: torch .* env.wrappers"):
        make_vector_env(EnvConfig(id="recurrl/TMaze-v0", vectorization="torch", wrappers=flicker))
    with pytest.raises(ConfigError, match="env.vectorization: torch needs an env.id"):
        make_vector_env(EnvConfig(vectorization="torch"), env=lambda: None)


@pytest.mark.parametrize("mode", ["torch", "auto", "native", "sync"])
def test_bad_env_kwargs_are_one_config_error(mode):
    config = EnvConfig(id="recurrl/TMaze-v0", kwargs={"length": -1}, vectorization=mode)
    with pytest.raises(ConfigError) as error:
        make_vector_env(config, 2)
    message = str(error.value)
    assert message.startswith("env.kwargs: recurrl/TMaze-v0") and "\n" not in message
    assert "length must be >= 1, got -1" in message


# --- on a GPU -------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=IDS)
def test_on_cuda_same_episodes_as_the_numpy_env(env_id, kwargs):
    ref, env = pair(env_id, kwargs, device="cuda")
    equal = np.testing.assert_array_equal if is_exact(ref) else _close
    obs = env.reset(seed=7)[0]
    assert obs.is_cuda
    equal(obs.cpu().numpy(), ref.reset(seed=7)[0])
    run_both(ref, env, 300)


@cuda
@pytest.mark.parametrize(("env_id", "kwargs"), CASES, ids=IDS)
def test_on_cuda_step_replays_as_a_cuda_graph(env_id, kwargs):
    ref, env = pair(env_id, kwargs, device="cuda")
    ref.reset(seed=2)
    env.reset(seed=2)
    first = random_actions(np.random.default_rng(0), ref.single_action_space, 12)
    actions = torch.as_tensor(first, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        env.step(actions)  # warm-up step, replayed on the numpy env too
    torch.cuda.current_stream().wait_stream(stream)
    ref.step(first)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # records the step, runs nothing
        outputs = env.step(actions)
    rng = np.random.default_rng(3)
    for t in range(200):
        chosen = random_actions(rng, ref.single_action_space, 12)
        actions.copy_(torch.from_numpy(chosen))
        graph.replay()
        assert_same_step(ref.step(chosen), outputs, f"replay {t}", is_exact(ref))


def _as_tensors(out):
    """A numpy env's step as the torch env returns it (dense final_obs)."""
    obs, reward, terminated, truncated, info = out
    ended = info.get("_final_obs", np.zeros(len(obs), dtype=bool))
    final = obs.copy()
    final[ended] = info["final_obs"][ended] if ended.any() else final[ended]
    info = {"final_obs": torch.from_numpy(final), "_final_obs": torch.from_numpy(ended)}
    flags = torch.from_numpy(terminated), torch.from_numpy(truncated)
    return torch.from_numpy(obs), torch.from_numpy(reward.astype(np.float32)), *flags, info


def _as_arrays(out):
    """:func:`_as_tensors` undone (dense ``final_obs`` kept)."""
    obs, reward, terminated, truncated, info = (x.numpy() if torch.is_tensor(x) else x for x in out)
    info = {key: value.numpy() for key, value in info.items()}
    return obs, reward, terminated, truncated, info


def _assert_same_tensors(a, b, where: str) -> None:
    for x, y, name in zip(a[:4], b[:4], ("obs", "reward", "terminated", "truncated"), strict=True):
        assert x.dtype == y.dtype and torch.equal(x.cpu(), y.cpu()), f"{where}: {name}"
    for key in ("final_obs", "_final_obs"):
        assert torch.equal(a[4][key].cpu(), b[4][key].cpu()), f"{where}: {key}"


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from _leaves(value)
    else:
        yield tree


def _assert_same_tree(ours, theirs, exact: bool = True) -> None:
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs)
        for key in theirs:
            _assert_same_tree(ours[key], theirs[key], exact)
    elif isinstance(theirs, list | tuple):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            _assert_same_tree(a, b, exact)
    elif isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.dtype == theirs.dtype
        if exact or theirs.dtype.kind != "f":
            np.testing.assert_array_equal(ours, theirs)
        else:
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    else:
        assert ours == theirs
