"""Encoders per space (output shapes, one-hots, image layouts) and action masking."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from recurrl.algo import ppo
from recurrl.algo.rollout import Collector
from recurrl.config import PolicyConfig
from recurrl.policy import ActorCritic
from recurrl.policy.encoders import ImageEncoder, ObservationEncoder
from recurrl.policy.spaces import image_layout
from recurrl.policy.tree import as_observation, observation_leaves, stack_observations
from tests.space_envs import RandomSpaceEnv

U8 = np.uint8


def encode(space, obs_batch, sizes=(), encoder="auto") -> torch.Tensor:
    module = ObservationEncoder(space, list(sizes), "tanh", encoder)
    leaves = observation_leaves(space, as_observation(obs_batch))
    out = module(leaves)
    assert out.shape == (len(leaves[0]), module.out_features)
    return out


@pytest.mark.parametrize(
    ("space", "features"),
    [
        (spaces.Box(-1, 1, (3,)), 3),
        (spaces.Box(-1, 1, (2, 3, 2)), 12),
        (spaces.Box(0, 5, (4,), np.int64), 4),
        (spaces.Discrete(4, start=2), 4),
        (spaces.MultiDiscrete([3, 2]), 5),
        (spaces.MultiDiscrete([[2, 3], [2, 2]]), 9),
        (spaces.MultiBinary(4), 4),
        (spaces.MultiBinary([2, 3]), 6),
        (spaces.Box(0, 255, (10, 10, 3), U8), 32 * 5 * 5),  # small-image CNN, stride 2
        (spaces.Box(0, 255, (3, 7, 7), U8), 32 * 7 * 7),  # tiny image: stride 1
        (spaces.Box(0, 255, (4, 84, 84), U8), 64 * 7 * 7),  # Nature CNN
        (spaces.Tuple((spaces.Box(-1, 1, (2,)), spaces.Discrete(3))), 5),
        (spaces.Dict({"a": spaces.MultiBinary(2), "b": spaces.Dict({"c": spaces.Discrete(2)})}), 4),
    ],
)
def test_encoder_output_shapes(space, features):
    batch = [space.sample() for _ in range(5)]
    stacked = stack_observations(batch)
    assert encode(space, stacked).shape == (5, features)
    assert encode(space, stacked, sizes=[7]).shape == (
        5,
        7 * len(observation_leaves(space, space.sample())),
    )


def test_one_hot_encodings_with_start_and_parts():
    discrete = encode(spaces.Discrete(4, start=2), np.array([2, 5]))
    assert discrete.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]
    multi = encode(spaces.MultiDiscrete([3, 2], start=[1, 0]), np.array([[3, 1]]))
    assert multi.tolist() == [[0, 0, 1, 0, 1]]


def test_action_mask_is_not_encoded():
    space = spaces.Dict({"x": spaces.Box(-1, 1, (3,)), "action_mask": spaces.MultiBinary(4)})
    assert ObservationEncoder(space, [], "tanh", "auto").out_features == 3


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((84, 84, 3), "HWC"),
        ((3, 84, 84), "CHW"),
        ((4, 84, 84), "CHW"),
        ((84, 84, 12), "HWC"),
        ((7, 7, 3), "HWC"),
        ((1, 16, 16), "CHW"),
    ],
)
def test_image_detection_in_both_layouts(shape, layout):
    assert image_layout(spaces.Box(0, 255, shape, U8)) == layout


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(0.0, 1.0, (84, 84, 3)),  # float
        spaces.Box(0, 1, (84, 84, 3), U8),  # not 0..255
        spaces.Box(0, 255, (84, 84), U8),  # 2-d
        spaces.Box(0, 255, (10,), U8),
        spaces.Discrete(3),
    ],
)
def test_non_images_are_not_detected(space):
    assert image_layout(space) is None


def test_image_layouts_give_the_same_features():
    torch.manual_seed(0)
    hwc = ImageEncoder((12, 10, 3), "HWC", 1 / 255)
    chw = ImageEncoder((3, 12, 10), "CHW", 1 / 255)
    chw.load_state_dict(hwc.state_dict())
    image = torch.randint(0, 256, (2, 12, 10, 3), dtype=torch.uint8)
    torch.testing.assert_close(
        hwc(image, torch.float32), chw(image.permute(0, 3, 1, 2), torch.float32)
    )


def test_encoder_choice_auto_mlp_cnn():
    image = spaces.Box(0, 255, (10, 10, 3), U8)
    assert isinstance(ObservationEncoder(image, [], "tanh", "auto").parts["0"].first, ImageEncoder)
    flat = ObservationEncoder(image, [], "tanh", "mlp")
    assert flat.out_features == 300
    full = np.full((1, 10, 10, 3), 255, U8)
    assert encode(image, full, encoder="mlp").max().item() == pytest.approx(1.0)  # scaled
    grid = spaces.Box(-1.0, 1.0, (2, 9, 9))  # float: no image, but a CNN on request
    assert not isinstance(
        ObservationEncoder(grid, [], "tanh", "auto").parts["0"].first, ImageEncoder
    )
    assert isinstance(ObservationEncoder(grid, [], "tanh", "cnn").parts["0"].first, ImageEncoder)
    matrix = spaces.Box(-1.0, 1.0, (6, 5))  # 2-d: one channel
    assert encode(matrix, np.zeros((2, 6, 5), np.float32), encoder="cnn").shape == (2, 32 * 6 * 5)


# --- action masks --------------------------------------------------------------------------------


def masked_policy(action_space, mask_size):
    obs_space = spaces.Dict(
        {"x": spaces.Box(-1, 1, (2,)), "action_mask": spaces.MultiBinary(mask_size)}
    )
    torch.manual_seed(0)
    return ActorCritic(obs_space, action_space, PolicyConfig(hidden_size=8, encoder_sizes=[8]))


def test_masked_discrete_actions_are_never_sampled_and_have_zero_probability():
    policy = masked_policy(spaces.Discrete(5, start=1), 5)
    B = 2000
    mask = torch.rand(B, 5) < 0.5
    mask[torch.arange(B), torch.randint(0, 5, (B,))] = True  # at least one valid
    obs = as_observation({"x": torch.randn(B, 2), "action_mask": mask.to(torch.int8)})
    out = policy.step(obs, policy.initial_state(B), torch.ones(B))
    assert mask[torch.arange(B), out.action].all()
    dist, _, _ = policy(obs.map(lambda x: x[None]), policy.initial_state(B), torch.ones(1, B))
    assert (dist.probs[0][~mask] == 0).all()
    assert torch.isfinite(dist.entropy()).all()
    deterministic = policy.step(obs, policy.initial_state(B), torch.ones(B), deterministic=True)
    assert mask[torch.arange(B), deterministic.action].all()
    env_actions, _ = policy.act({"x": np.zeros((B, 2)), "action_mask": mask.numpy()}, None, True)
    assert mask[torch.arange(B), torch.as_tensor(env_actions - 1)].all()  # start=1


def test_masked_multi_discrete_parts():
    policy = masked_policy(spaces.MultiDiscrete([3, 2]), 5)
    mask = torch.tensor([[1, 0, 0, 0, 1]] * 500, dtype=torch.int8)  # only (0, 1) valid
    obs = as_observation({"x": torch.randn(500, 2), "action_mask": mask})
    out = policy.step(obs, policy.initial_state(500), torch.ones(500))
    assert (out.action == torch.tensor([0, 1])).all()
    torch.testing.assert_close(out.log_prob, torch.zeros(500))


def test_masked_actions_get_zero_probability_in_the_loss():
    obs_space = spaces.Dict({"x": spaces.Box(-1, 1, (3,)), "action_mask": spaces.MultiBinary(4)})
    action_space = spaces.Discrete(4)
    envs = gym.vector.SyncVectorEnv(
        [lambda: RandomSpaceEnv(obs_space, action_space, episode_length=6) for _ in range(3)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    torch.manual_seed(0)
    policy = ActorCritic(obs_space, action_space, PolicyConfig(hidden_size=8, encoder_sizes=[8]))
    rollout = Collector(envs, policy, 16, 8, seed=0).collect()
    mask = rollout.obs.data["action_mask"].bool()  # (T, B, 4)
    assert mask.gather(-1, rollout.actions.unsqueeze(-1)).all()  # every stored action valid
    advantages, returns = rollout.advantages(0.99, 0.95)
    sequences = ppo.make_sequences(rollout, advantages, returns, 8)
    seq_mask = ppo.to_chunks(mask, 8)
    for action in range(4):
        out = policy.evaluate_actions(
            sequences.obs,
            torch.full_like(sequences.actions, action),
            sequences.start_states,
            sequences.episode_start,
        )
        probability = out.log_prob.exp()
        assert (probability[~seq_mask[..., action]] == 0).all()
        assert (probability[seq_mask[..., action]] > 0).all()
    loss, terms = ppo.minibatch_loss(policy, sequences, ppo.PPOConfig(ent_coef=0.01))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)


def test_state_dicts_from_before_per_part_encoders_load():
    torch.manual_seed(0)
    policy = ActorCritic(spaces.Box(-1, 1, (2,)), spaces.Discrete(2))
    old_layout = {
        key.replace("encoder.parts.0.mlp.", "encoder.net."): value
        for key, value in policy.state_dict().items()
    }
    assert "encoder.net.0.weight" in old_layout
    fresh = ActorCritic(spaces.Box(-1, 1, (2,)), spaces.Discrete(2))
    fresh.load_state_dict(old_layout)
    torch.testing.assert_close(fresh.state_dict(), policy.state_dict())
