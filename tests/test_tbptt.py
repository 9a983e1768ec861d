"""Truncated BPTT: chunking, stored states, gradients equal to full BPTT when L = T."""

from __future__ import annotations

import pytest
import torch

from recurrl.algo import ppo
from recurrl.config import PPOConfig
from tests.conftest import collect_rollout


def collect(core: str, rollout_len: int, bptt_len: int, env_id="recurrl/CartPoleNoVelocity-v0"):
    return collect_rollout(core, rollout_len, bptt_len, env_id)


def stepwise_loss(policy, rollout, advantages, returns, config, detach_every=None):
    """Reference: step the policy one step at a time from the rollout's first state, carrying
    the state with autograd (full BPTT), optionally detaching it every ``detach_every`` steps."""
    state = tuple(s[0] for s in rollout.chunk_states)
    log_probs, entropies, values = [], [], []
    for t in range(rollout.obs.shape[0]):
        if detach_every and t % detach_every == 0:
            state = tuple(s.detach() for s in state)
        out = policy.evaluate_actions(
            rollout.obs[t : t + 1],
            rollout.actions[t : t + 1],
            state,
            rollout.episode_start[t : t + 1],
        )
        state = out.state
        log_probs.append(out.log_prob)
        entropies.append(out.entropy)
        values.append(out.value)
    batch = ppo.make_sequences(rollout, advantages, returns, rollout.obs.shape[0])
    terms = ppo.ppo_loss(
        torch.cat(log_probs),
        torch.cat(entropies),
        torch.cat(values),
        batch,
        config.clip_coef,
        config.clip_vloss,
        config.norm_adv,
    )
    return terms.policy_loss + config.vf_coef * terms.value_loss - config.ent_coef * terms.entropy


def gradients(policy, loss):
    policy.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in policy.parameters() if p.grad is not None]


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_full_rollout_chunk_gradient_equals_full_bptt(core):
    policy, rollout, advantages, returns = collect(core, rollout_len=24, bptt_len=24)
    config = PPOConfig(
        rollout_len=24, bptt_len=24, num_minibatches=1, ent_coef=0.01, clip_vloss=True
    )
    # Perturb the parameters so ratios differ from 1 and clipping is active somewhere.
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sequences = ppo.make_sequences(rollout, advantages, returns, config.bptt_len)
    loss, _ = ppo.minibatch_loss(policy, sequences, config)
    ours = gradients(policy, loss)
    reference = gradients(policy, stepwise_loss(policy, rollout, advantages, returns, config))
    assert len(ours) == len(reference) > 0
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_truncated_chunks_stop_gradients_at_chunk_starts():
    policy, rollout, advantages, returns = collect("lstm", rollout_len=24, bptt_len=8)
    config = PPOConfig(rollout_len=24, bptt_len=8, num_minibatches=1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sequences = ppo.make_sequences(rollout, advantages, returns, config.bptt_len)
    ours = gradients(policy, ppo.minibatch_loss(policy, sequences, config)[0])
    # Detaching every 8 steps while carrying the *stored* states: the stepwise reference carries
    # states computed with the perturbed parameters, so compare against chunk-start refresh.
    sequences = sequences._replace(
        start_states=ppo.refresh_start_states(policy, rollout, config.bptt_len)
    )
    refreshed = gradients(policy, ppo.minibatch_loss(policy, sequences, config)[0])
    truncated = gradients(
        policy, stepwise_loss(policy, rollout, advantages, returns, config, detach_every=8)
    )
    full = gradients(policy, stepwise_loss(policy, rollout, advantages, returns, config))
    for a, b in zip(refreshed, truncated, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert any(not torch.allclose(a, b) for a, b in zip(truncated, full, strict=True))
    assert any(not torch.allclose(a, b) for a, b in zip(ours, refreshed, strict=True))


@pytest.mark.parametrize("core", ["lstm", "gru", "none"])
@pytest.mark.parametrize("env_id", ["recurrl/CartPoleNoVelocity-v0", "CartPole-v1"])
def test_first_epoch_log_probs_equal_rollout_log_probs(core, env_id):
    # CartPole-v1 has a native NEXT_STEP vector env; ours uses SAME_STEP through SyncVectorEnv.
    policy, rollout, advantages, returns = collect(core, 32, 8, env_id)
    sequences = ppo.make_sequences(rollout, advantages, returns, 8)
    out = policy.evaluate_actions(
        sequences.obs, sequences.actions, sequences.start_states, sequences.episode_start
    )
    torch.testing.assert_close(out.log_prob, sequences.log_probs, rtol=0, atol=1e-9)
    torch.testing.assert_close(out.value, sequences.values, rtol=0, atol=1e-9)


def test_chunk_layout():
    T, B, L = 12, 3, 4
    x = torch.arange(T * B).view(T, B)
    chunks = ppo.to_chunks(x, L)  # (L, K*B)
    for k in range(T // L):
        for b in range(B):
            assert chunks[:, k * B + b].tolist() == x[k * L : (k + 1) * L, b].tolist()
    states = (torch.arange(T // L * 2 * B * 5).view(T // L, 2, B, 5),)  # (K, layers, B, H)
    batched = ppo.chunk_states_to_batch(states)[0]  # (layers, K*B, H)
    assert torch.equal(batched[:, 2 * B + 1], states[0][2, :, 1])


def test_refresh_with_unchanged_parameters_reproduces_stored_states():
    policy, rollout, _, _ = collect("gru", 32, 8)
    refreshed = ppo.refresh_start_states(policy, rollout, 8)
    stored = ppo.chunk_states_to_batch(rollout.chunk_states)
    for a, b in zip(refreshed, stored, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_next_step_reset_only_steps_never_train():
    policy, rollout, _, _ = collect("lstm", 64, 8, "CartPole-v1")
    invalid = rollout.valid == 0
    assert invalid.any(), "expected at least one NEXT_STEP reset step in 64 steps of CartPole"
    # A reset-only step follows a done step, and the step after it starts an episode.
    done = (rollout.terminated + rollout.truncated) > 0
    t, b = invalid.nonzero()[0].tolist()
    if t > 0:
        assert done[t - 1, b]
    assert rollout.episode_start[t, b] == 0  # final obs is processed with the live state
    if t + 1 < rollout.obs.shape[0]:
        assert rollout.episode_start[t + 1, b] == 1
    assert rollout.rewards[invalid].abs().sum() == 0


def test_next_step_reset_only_steps_add_no_loss_and_no_gradient():
    """Whatever the rollout holds at a NEXT_STEP reset-only step, the PPO loss and its gradient
    (to the new log-probs, values and entropies, and to the policy's parameters) ignore it."""
    policy, rollout, advantages, returns = collect("lstm", 64, 64, "CartPole-v1")
    invalid = rollout.valid == 0
    assert invalid.any(), "expected at least one NEXT_STEP reset step in 64 steps of CartPole"
    config = PPOConfig(rollout_len=64, bptt_len=64, clip_vloss=True)

    def loss_and_grads(advantages, returns):
        batch = ppo.make_sequences(rollout, advantages, returns, 64)  # one chunk per env
        out = policy.evaluate_actions(batch.obs, batch.actions, batch.start_states,
                                      batch.episode_start)  # fmt: skip
        outputs = [out.log_prob, out.entropy, out.value]
        terms = ppo.ppo_loss(*outputs, batch, config.clip_coef, True, True)
        loss = terms.policy_loss + config.vf_coef * terms.value_loss - 0.01 * terms.entropy
        parameters = [p for p in policy.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, outputs + parameters)
        return loss.detach(), grads[:3], grads[3:], batch.valid

    loss, leaf_grads, grads, valid = loss_and_grads(advantages, returns)
    for grad in leaf_grads:
        assert grad[valid == 0].abs().max() == 0
        assert grad[valid == 1].abs().max() > 0
    # Garbage targets at the reset-only steps change nothing.
    poisoned_adv, poisoned_ret = advantages.clone(), returns.clone()
    poisoned_adv[invalid], poisoned_ret[invalid] = 1e6, -1e6
    loss2, _, grads2, _ = loss_and_grads(poisoned_adv, poisoned_ret)
    torch.testing.assert_close(loss2, loss, rtol=1e-12, atol=0)
    for a, b in zip(grads, grads2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_bptt_len_must_divide_rollout_len():
    from recurrl.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="ppo.bptt_len=48 must divide ppo.rollout_len=128"):
        config_from_dict({"ppo": {"rollout_len": 128, "bptt_len": 48}})


def test_default_chunk_is_the_whole_rollout_and_minibatches_are_capped(tmp_path):
    """The defaults backpropagate through the whole rollout, whatever ``rollout_len`` a user
    sets alone, and a few envs with whole-rollout chunks still train (fewer sequences than
    ``num_minibatches``: one minibatch per sequence)."""
    from recurrl.config import config_from_dict, load_config
    from recurrl.run.checkpoints import load_checkpoint
    from recurrl.run.train import train

    assert load_config(None, []).ppo.bptt_len == load_config(None, []).ppo.rollout_len
    assert config_from_dict({"ppo": {"rollout_len": 32}}).ppo.bptt_len == 32
    assert config_from_dict({"ppo": {"rollout_len": 256}}).ppo.bptt_len == 64
    config = config_from_dict({"env": {"num_envs": 2}, "ppo": {"rollout_len": 8}})
    assert config.num_chunks == 2 < config.ppo.num_minibatches
    overrides = ["env.id=recurrl/TMaze-v0", "env.num_envs=2", "ppo.rollout_len=8"]
    overrides += ["ppo.total_steps=32", "policy.hidden_size=8", "policy.encoder_sizes=[8]"]
    train(load_config(None, [*overrides, f"run.dir={tmp_path}"]), quiet=True)
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["global_step"] == 32
