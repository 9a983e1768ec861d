"""Policy options: previous action/reward inputs, layer-norm cells, learned initial state,
normalisation statistics across save/load, exact log-probs for every combination."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import AffineTransform, TanhTransform, TransformedDistribution

import recurrl
from recurrl.algo import ppo
from recurrl.algo.evaluate import evaluate
from recurrl.algo.make_env import declares_prev_action
from recurrl.algo.rollout import Collector
from recurrl.config import ConfigError, PolicyConfig, load_config
from recurrl.policy import ActorCritic
from recurrl.policy.cores import LearnedInitialState, make_core
from recurrl.policy.layernorm import LayerNormGRU, LayerNormLSTM
from recurrl.policy.spaces import space_to_dict
from recurrl.run.train import train
from tests.space_envs import RandomSpaceEnv

SAME, NEXT = gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.NEXT_STEP
BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)


def vector_env(obs_space, action_space, mode=SAME, num_envs=3, episode_length=3, truncate=False):
    def make():
        return RandomSpaceEnv(obs_space, action_space, episode_length, truncate)

    return gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=mode)


# --- previous action and reward --------------------------------------------------------------


def core_inputs(policy, rollout) -> torch.Tensor:
    """The features the actor core reads over the whole rollout ``[T, B, F]``."""
    captured = []
    hook = policy.actor_core.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    with torch.no_grad():
        policy(
            rollout.obs,
            tuple(s[0] for s in rollout.chunk_states),
            rollout.episode_start,
            rollout.prev_actions,
            rollout.prev_rewards,
        )
    hook.remove()
    return captured[0]


def expected_action_features(action_space, env_actions: np.ndarray) -> np.ndarray:
    if isinstance(action_space, spaces.Discrete):
        return np.eye(action_space.n)[env_actions - action_space.start]
    center, half = (
        (action_space.high + action_space.low) / 2,
        (action_space.high - action_space.low) / 2,
    )
    return (env_actions - center) / half


@pytest.mark.parametrize("mode", [SAME, NEXT])
@pytest.mark.parametrize(
    "action_space", [spaces.Discrete(3, start=1), spaces.Box(-1.0, 3.0, (2,), np.float32)]
)
def test_previous_inputs_are_zero_at_every_episode_start_and_last_step_otherwise(
    mode, action_space
):
    torch.manual_seed(0)
    config = PolicyConfig(hidden_size=8, encoder_sizes=[4], prev_action=True, prev_reward=True)
    policy = ActorCritic(BOX, action_space, config)
    collector = Collector(vector_env(BOX, action_space, mode), policy, 12, 6, seed=0)
    first = collector.collect()
    rollout = collector.collect()  # the reward statistics now hold the first rollout's rewards
    assert policy.previous.reward_normalizer.count.item() > 0
    starts = rollout.episode_start.bool()
    assert starts[1:].any()  # episodes start mid-sequence

    env_actions = policy.head.to_env(torch.cat([first.actions[-1:], rollout.actions]).numpy())
    raw_rewards = torch.cat([first.rewards[-1:], rollout.rewards])  # no reward scaling here
    expected = np.concatenate(
        [
            expected_action_features(action_space, env_actions[:-1]).reshape(12, 3, -1),
            policy.previous.reward_normalizer(raw_rewards[:-1]).unsqueeze(-1).numpy(),
        ],
        axis=-1,
    )  # (T, B, P): step t - 1's action and reward
    features = core_inputs(policy, rollout)[..., -policy.previous.out_features :]
    assert (features[starts] == 0).all()
    np.testing.assert_allclose(features[~starts].numpy(), expected[~starts.numpy()], atol=1e-6)
    stored = rollout.prev_actions.numpy()
    np.testing.assert_array_equal(stored[1:], env_actions[1:-1])


def test_act_with_previous_inputs_matches_the_sequence_computation():
    torch.manual_seed(0)
    action_space = spaces.Discrete(3)
    config = PolicyConfig(hidden_size=8, encoder_sizes=[4], prev_action=True, prev_reward=True)
    policy = ActorCritic(BOX, action_space, config)
    policy.update_reward_statistics(torch.randn(100))
    env = RandomSpaceEnv(BOX, action_space, episode_length=4)
    obs, _ = env.reset(seed=0)
    state, episode_start, action, reward = None, True, None, None
    record = {"obs": [], "start": [], "action": [], "reward": []}
    for _ in range(11):
        action, state = policy.act(
            obs, state, episode_start, deterministic=True, prev_action=action, prev_reward=reward
        )
        record["obs"].append(obs)
        record["start"].append(episode_start)
        record["action"].append(int(action))
        obs, reward, terminated, truncated, _ = env.step(action)
        record["reward"].append(reward)
        episode_start = terminated or truncated
        if episode_start:
            obs, _ = env.reset()
    prev_actions = torch.tensor([0] + record["action"][:-1]).view(-1, 1)  # (T, 1)
    prev_rewards = torch.tensor([0.0] + record["reward"][:-1]).view(-1, 1)
    obs_seq = torch.as_tensor(np.stack(record["obs"])).unsqueeze(1)  # (T, 1, 3)
    starts = torch.tensor(record["start"], dtype=torch.float32).view(-1, 1)
    dist, _, _ = policy(obs_seq, policy.initial_state(1), starts, prev_actions, prev_rewards)
    assert dist.logits.argmax(-1).flatten().tolist() == record["action"]
    with pytest.raises(ValueError, match="pass act\\(..., prev_action=action, prev_reward=reward"):
        policy.act(obs, state, False)


class PayoutEnv(RandomSpaceEnv):
    """An env that says, as POPGym's bandits and board games do, that its observation means
    nothing without the action that led to it."""

    obs_requires_prev_action = True

    def __init__(self) -> None:
        super().__init__(BOX, spaces.Discrete(3), 5, False)


def plain_env() -> RandomSpaceEnv:
    return RandomSpaceEnv(BOX, spaces.Discrete(3), 5, False)


gym.register("recurrl_test/Payout-v0", entry_point=PayoutEnv)


@pytest.mark.parametrize(
    "env, declared",
    [(PayoutEnv, True), (plain_env, False), ("recurrl_test/Payout-v0", True)],
)
def test_prev_action_auto_follows_what_the_env_declares(tmp_path, env, declared):
    model = recurrl.PPO(
        {"id": env, "num_envs": 2},
        policy={"hidden_size": 8, "encoder_sizes": [8]},
        ppo={"total_steps": 32, "rollout_len": 16, "num_minibatches": 1, "update_epochs": 1},
        run={"dir": str(tmp_path / "run")},
        device="cpu",
    ).learn()
    assert model.policy.config.prev_action is declared
    assert (model.policy.previous is not None) is declared
    # Recorded resolved: the run's config and its checkpoint rebuild the same policy.
    assert load_config(tmp_path / "run" / "config.yaml").policy.prev_action is declared
    loaded = recurrl.load_policy(tmp_path / "run" / "checkpoints" / "final.pt")
    assert loaded.config.prev_action is declared
    obs, _ = PayoutEnv().reset(seed=0)
    action, state = model.predict(obs, episode_start=True)
    action, state = model.predict(obs, state, False, prev_action=action, prev_reward=0.5)
    assert model.policy.action_space.contains(action)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_declaration_is_read_without_calling_into_the_envs(mode):
    for env_id, declared in (("recurrl_test/Payout-v0", True), ("CartPole-v1", False)):
        envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode)
        assert declares_prev_action(envs) is declared
        envs.close()


def test_prev_action_auto_is_off_for_a_policy_built_without_an_env():
    assert ActorCritic(BOX, spaces.Discrete(3), PolicyConfig()).previous is None
    with pytest.raises(ConfigError, match="policy.prev_action: expected true, false or auto"):
        load_config(None, ["policy.prev_action=sometimes"])


# --- network width: auto ------------------------------------------------------------------------

BOARD = spaces.MultiDiscrete([3] * 52)  # POPGym Concentration's observation: one-hot, 156 wide


@pytest.mark.parametrize(
    "observation, encoder, hidden",
    [
        (BOX, [64], 128),
        (BOARD, [256], 256),
        (spaces.Box(-1, 1, (128,)), [64], 128),  # wide means more than 128 features
        (spaces.Box(-1, 1, (129,)), [256], 256),
        (spaces.Dict({"board": BOARD, "x": BOX}), [256], 256),  # the widest part decides
        (spaces.Box(0, 255, (40, 40, 3), np.uint8), [64], 128),  # an image goes to a CNN
    ],
    ids=["small", "board", "128", "129", "dict", "image"],
)
def test_auto_width_follows_the_widest_mlp_input(observation, encoder, hidden):
    policy = ActorCritic(observation, spaces.Discrete(3), PolicyConfig())
    assert (policy.config.encoder_sizes, policy.config.hidden_size) == (encoder, hidden)
    assert policy.actor_core.out_features == hidden
    assert policy.encoder.out_features == encoder[0] * len(policy.encoder.parts)
    # A number set by hand is kept; auto fills in only what is left to it.
    by_hand = ActorCritic(observation, spaces.Discrete(3), PolicyConfig(hidden_size=32))
    assert (by_hand.config.encoder_sizes, by_hand.config.hidden_size) == (encoder, 32)
    narrow = ActorCritic(observation, spaces.Discrete(3), PolicyConfig(encoder_sizes=[]))
    assert (narrow.config.encoder_sizes, narrow.config.hidden_size) == ([], hidden)


class BoardEnv(RandomSpaceEnv):
    def __init__(self) -> None:
        super().__init__(BOARD, spaces.Discrete(52), 5, False)


def test_auto_width_is_recorded_as_numbers(tmp_path):
    model = recurrl.PPO(
        {"id": BoardEnv, "num_envs": 2},
        ppo={"total_steps": 32, "rollout_len": 16, "num_minibatches": 1, "update_epochs": 1},
        run={"dir": str(tmp_path / "run")},
        device="cpu",
    ).learn()
    assert (model.policy.config.encoder_sizes, model.policy.config.hidden_size) == ([256], 256)
    saved = load_config(tmp_path / "run" / "config.yaml").policy
    assert (saved.encoder_sizes, saved.hidden_size) == ([256], 256)
    loaded = recurrl.load_policy(tmp_path / "run" / "checkpoints" / "final.pt")
    assert (loaded.config.encoder_sizes, loaded.config.hidden_size) == ([256], 256)
    for override, message in (
        ("policy.hidden_size=wide", "policy.hidden_size: expected a positive int or auto"),
        ("policy.encoder_sizes=wide", "policy.encoder_sizes: expected a list of ints or auto"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(None, [override])


# --- exact log-probs for every option combination -----------------------------------------------

OPTIONS = [
    {"core": "lstm", "prev_action": True, "prev_reward": True},
    {"core": "gru", "layer_norm": True},
    {"core": "lstm", "layer_norm": True, "learned_initial_state": True, "num_layers": 2},
    {"core": "gru", "learned_initial_state": True, "shared_core": True, "prev_action": True},
    {"core": "none", "prev_action": True, "prev_reward": True},
]
MASKED_OBS = spaces.Dict({"x": BOX, "action_mask": spaces.MultiBinary(4)})


@pytest.mark.parametrize("mode", [SAME, NEXT])
@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
def test_first_epoch_log_probs_equal_stored_for_every_option(options, mode):
    torch.manual_seed(0)
    action_space = spaces.Discrete(4)
    config = PolicyConfig(hidden_size=8, encoder_sizes=[8], **options)
    policy = ActorCritic(MASKED_OBS, action_space, config).double()
    with torch.no_grad():
        for parameter in policy.parameters():  # learned initial states away from zero
            parameter.add_(0.1 * torch.randn_like(parameter))
    envs = vector_env(MASKED_OBS, action_space, mode, episode_length=5, truncate=True)
    collector = Collector(envs, policy, 16, 8, seed=0)
    collector.collect()
    rollout = collector.collect()
    advantages, returns = rollout.advantages(0.99, 0.95)
    sequences = ppo.make_sequences(rollout, advantages, returns, 8)
    with torch.no_grad():
        out = policy.evaluate_actions(
            sequences.obs,
            sequences.actions,
            sequences.start_states,
            sequences.episode_start,
            sequences.prev_actions,
            sequences.prev_rewards,
        )
    torch.testing.assert_close(out.log_prob, sequences.log_probs, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.value, sequences.values, rtol=0, atol=1e-9)
    refreshed = ppo.refresh_start_states(policy, rollout, 8)
    for a, b in zip(refreshed, sequences.start_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    stats = ppo.update(
        policy,
        optimizer,
        rollout,
        advantages,
        returns,
        ppo.PPOConfig(rollout_len=16, bptt_len=8, num_minibatches=2, update_epochs=2),
        torch.Generator().manual_seed(0),
    )
    assert np.isfinite(stats["policy_loss"])


# --- cores: layer norm and learned initial state -------------------------------------------------

CORES = {
    "layernorm_lstm": lambda: make_core("lstm", 5, 6, 2, "tanh", layer_norm=True),
    "layernorm_gru": lambda: make_core("gru", 5, 6, 1, "tanh", layer_norm=True),
    "learned_lstm": lambda: make_core("lstm", 5, 6, 2, "tanh", learned_initial_state=True),
    "learned_layernorm_gru": lambda: make_core("gru", 5, 6, 2, "tanh", True, True),
}


def make_test_core(name):
    torch.manual_seed(0)
    core = CORES[name]().double()
    with torch.no_grad():
        for parameter in core.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return core


@pytest.mark.parametrize("name", CORES)
def test_core_stepping_equals_unroll_with_equal_gradients(name):
    core = make_test_core(name)
    T, B = 7, 3
    x = torch.randn(T, B, 5, dtype=torch.double)
    episode_start = torch.zeros(T, B, dtype=torch.double)
    episode_start[0, 0] = episode_start[3, 1] = episode_start[5, :] = 1
    state = tuple(s + 0.3 for s in core.initial_state(B))  # not the initial state
    weights = torch.randn(T, B, 6, dtype=torch.double)

    def gradients(loss):
        core.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in core.parameters()]

    y, final = core(x, state, episode_start)
    unrolled = gradients((y * weights).sum())
    outputs, carried = [], state
    for t in range(T):
        y_t, carried = core(x[t : t + 1], carried, episode_start[t : t + 1])
        outputs.append(y_t)
    stepped = torch.cat(outputs)
    torch.testing.assert_close(stepped, y.detach(), rtol=0, atol=1e-12)
    for a, b in zip(final, carried, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-12)
    for a, b in zip(unrolled, gradients((stepped * weights).sum()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in unrolled)  # learned states get gradients too


@pytest.mark.parametrize("name", CORES)
def test_core_reset_mid_sequence_equals_the_episode_alone(name):
    core = make_test_core(name)
    x = torch.randn(6, 2, 5, dtype=torch.double)
    episode_start = torch.zeros(6, 2, dtype=torch.double)
    episode_start[2, 1] = 1
    state = tuple(s + 0.5 for s in core.initial_state(2))
    with torch.no_grad():
        packed, _ = core(x, state, episode_start)
        first = torch.zeros(4, 1, dtype=torch.double)
        first[0] = 1
        alone, _ = core(x[2:, 1:], core.initial_state(1), first)
    torch.testing.assert_close(packed[2:, 1:], alone, rtol=0, atol=1e-12)


def test_learned_initial_state_is_the_state_after_a_reset():
    core = make_test_core("learned_lstm")
    assert isinstance(core, LearnedInitialState)
    start = core.initial_state(4)
    assert all(s.shape == (2, 4, 6) for s in start)
    torch.testing.assert_close(start[0][:, 0], core.initial[0][:, 0].detach())
    assert start[0].abs().sum() > 0


def test_layer_norm_option_swaps_the_cells():
    lstm = ActorCritic(BOX, spaces.Discrete(2), PolicyConfig(layer_norm=True, num_layers=2))
    gru = ActorCritic(BOX, spaces.Discrete(2), PolicyConfig(core="gru", layer_norm=True))
    assert isinstance(lstm.actor_core.rnn, LayerNormLSTM)
    assert isinstance(gru.critic_core.rnn, LayerNormGRU)
    assert [s.shape for s in lstm.initial_state(5)] == [(2, 5, lstm.config.hidden_size)] * 4


# --- normalisation statistics across save / load -------------------------------------------------

DICT_OBS = spaces.Dict(
    {
        "position": spaces.Box(-5.0, 5.0, (2,), np.float32),
        "camera": spaces.Box(0, 255, (6, 6, 1), np.uint8),
        "pair": spaces.Tuple((spaces.Box(0.0, 10.0, (3,), np.float32), spaces.Discrete(3))),
    }
)


def test_normalisation_statistics_survive_save_and_load(tmp_path):
    overrides = [
        f"run.dir={tmp_path / 'run'}",
        "env.id=tests.space_envs:recurrl_test/RandomSpace-v0",
        "env.num_envs=2",
        "env.normalize_obs=true",
        "env.normalize_reward=true",
        "policy.hidden_size=8",
        "policy.encoder_sizes=[8]",
        "policy.prev_action=true",
        "policy.prev_reward=true",
        "ppo.total_steps=96",
        "ppo.rollout_len=16",
        "ppo.bptt_len=8",
        "ppo.num_minibatches=2",
        "ppo.update_epochs=1",
    ]
    config = load_config(None, overrides)
    config.env.kwargs = {
        "observation_space": space_to_dict(DICT_OBS),
        "action_space": space_to_dict(spaces.MultiDiscrete([2, 3])),
    }
    result = train(config, quiet=True)
    loaded = recurrl.load_policy(result.run_dir)
    normalizers = result.policy.obs_normalizer.normalizers
    # Dict keys are sorted: camera (0, an image), pair[0] (1), pair[1] (2, Discrete), position (3).
    assert sorted(normalizers) == ["1", "3"]
    for key, normalizer in normalizers.items():
        assert normalizer.count.item() > 0 and normalizer.mean.abs().sum() > 0
        torch.testing.assert_close(
            loaded.obs_normalizer.normalizers[key].mean, normalizer.mean.cpu()
        )
    assert loaded.previous.reward_normalizer.count.item() > 0
    batch = {
        "position": np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32),
        "camera": np.zeros((4, 6, 6, 1), np.uint8),
        "pair": (np.full((4, 3), 5.0, np.float32), np.array([0, 1, 2, 0])),
    }
    previous = {"prev_action": np.array([[1, 2]] * 4), "prev_reward": np.array([0.5, -1, 2, 0])}
    ours, _ = result.policy.act(batch, None, False, deterministic=True, **previous)
    theirs, _ = loaded.act(batch, None, False, deterministic=True, **previous)
    np.testing.assert_array_equal(ours, theirs)
    returns = evaluate(loaded, config.env, episodes=3, deterministic=True)
    assert len(returns) == 3 and all(np.isfinite(returns))


# --- squashed Gaussian actions ------------------------------------------------------------------


def test_squashed_log_prob_is_the_density_of_the_env_action():
    torch.manual_seed(0)
    space = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([3.0, 0.5], np.float32))
    policy = ActorCritic(BOX, space, PolicyConfig(squash_actions=True, log_std_init=0.5)).double()
    obs = torch.randn(256, 3, dtype=torch.double)
    out = policy.step(obs, policy.initial_state(256), torch.ones(256, dtype=torch.double))
    dist, _, _ = policy(obs[None], policy.initial_state(256), torch.ones(1, 256))
    low, high = torch.tensor(space.low).double(), torch.tensor(space.high).double()
    reference = TransformedDistribution(
        dist, [TanhTransform(), AffineTransform((high + low) / 2, (high - low) / 2)]
    )
    env_action = policy.head.to_env(out.action.numpy())
    assert space.contains(env_action[0]) and np.all(env_action >= space.low)
    assert np.all(env_action <= space.high)
    expected = reference.log_prob(torch.as_tensor(env_action, dtype=torch.double)).sum(-1)[0]
    torch.testing.assert_close(out.log_prob, expected, rtol=1e-4, atol=1e-4)
    huge = policy.head.to_env(np.array([[50.0, -50.0]]))  # saturated tanh stays in bounds
    np.testing.assert_allclose(huge, [[3.0, 0.0]])
    assert torch.isfinite(policy.head.log_prob(dist, torch.full((1, 256, 2), 40.0))).all()
