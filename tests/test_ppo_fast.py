"""The PPO loss against an independently written reference of its formulas, masked steps, and
the optimizer the trainer builds."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from recurrl.algo import optim, ppo
from recurrl.config import PPOConfig

# --- the loss ---------------------------------------------------------------------------------


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def reference_ppo_loss(new_log_prob, entropy, new_value, batch, clip_coef, clip_vloss, norm_adv):
    """The clipped PPO objective written out again, step by step (CleanRL's form)."""
    mask = batch.valid
    advantages = batch.advantages
    if norm_adv:
        mean = masked_mean(advantages, mask)
        std = masked_mean((advantages - mean) ** 2, mask).sqrt()
        advantages = (advantages - mean) / (std + 1e-8)
    log_ratio = new_log_prob - batch.log_probs
    ratio = log_ratio.exp()
    surrogate = torch.max(
        -advantages * ratio, -advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    )
    value_error = (new_value - batch.returns) ** 2
    if clip_vloss:
        clipped = batch.values + (new_value - batch.values).clamp(-clip_coef, clip_coef)
        value_error = torch.max(value_error, (clipped - batch.returns) ** 2)
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip_coef).float(), mask)
    return ppo.LossTerms(
        masked_mean(surrogate, mask),
        0.5 * masked_mean(value_error, mask),
        masked_mean(entropy, mask),
        approx_kl,
        clipfrac,
    )


def exp_hits(target: float, dtype: torch.dtype) -> torch.Tensor:
    """A ``x`` with ``exp(x) == target`` exactly in ``dtype`` (a ratio on the clip boundary)."""
    goal = torch.tensor(target, dtype=dtype)
    x = goal.log()
    for _ in range(64):
        value = x.exp()
        if value == goal:
            return x
        x = torch.nextafter(x, torch.tensor(math.inf if value < goal else -math.inf, dtype=dtype))
    raise AssertionError(f"no x with exp(x) == {target} in {dtype}")


def rounding_tie(ratio: torch.Tensor, bound: float) -> float:
    """An ``a`` with ``a * ratio == a * bound`` though ``ratio != bound`` (rounding makes the
    two surrogates equal)."""
    for a in torch.linspace(0.8, 1.0, 1001, dtype=ratio.dtype):
        if a * ratio == a * bound:
            return a.item()
    raise AssertionError(f"no rounding tie for {ratio.item()} and {bound}")


def loss_inputs(seed: int, dtype: torch.dtype, clip_coef: float, L: int = 12, S: int = 9):
    """Random ``[L, S]`` inputs with masked steps, ratios inside, outside and on the clip range,
    and exact ties of the clipped and unclipped policy and value terms."""
    g = torch.Generator().manual_seed(seed)

    def randn(scale=1.0):
        return scale * torch.randn(L, S, generator=g, dtype=dtype)

    old_log_prob = randn(0.5) - 1.0
    log_ratio = randn(0.3)  # |r - 1| > c for about half the steps
    advantages, values, returns = randn(2.0), randn(), randn()
    new_value = values + randn(0.3)
    valid = (torch.rand(L, S, generator=g) > 0.2).float()
    # Row 0: ratio exactly 1 (a surrogate tie inside the clip range); row 1: zero advantages
    # (a tie outside it, without norm_adv); row 2: ratios exactly on the clip boundaries.
    log_ratio[0] = 0.0
    advantages[1] = 0.0
    old_log_prob[2] = 0.0  # so that new - old is log_ratio exactly
    log_ratio[2, 0::2] = exp_hits(1.0 + clip_coef, dtype)
    log_ratio[2, 1::2] = exp_hits(1.0 - clip_coef, dtype)
    # Row 5: ratio one ulp above 1 + c and advantages for which the two surrogates round to
    # the same value (a tie outside the clip range with nonzero gradient, without norm_adv).
    above = torch.nextafter(
        torch.tensor(1.0 + clip_coef, dtype=dtype), torch.tensor(2.0, dtype=dtype)
    )
    old_log_prob[5] = 0.0
    log_ratio[5] = exp_hits(above.item(), dtype)
    advantages[5] = -rounding_tie(above, 1.0 + clip_coef)
    # Row 3: the new value equals the old one (change 0, the two value terms tie, clipped or
    # not); row 4: (v - R)^2 == (V + c - R)^2 with v - V > c (a tie outside the value clip).
    new_value[3] = values[3]
    values[4], returns[4], new_value[4] = 0.0, 1.0, 2.0 - clip_coef
    new_log_prob = old_log_prob + log_ratio
    ratio = (new_log_prob - old_log_prob).exp()
    assert (ratio[0] == 1.0).all() and (
        ratio[2] == ratio[2].clamp(1 - clip_coef, 1 + clip_coef)
    ).all()
    assert ((ratio[2] == 1 + clip_coef) | (ratio[2] == 1 - clip_coef)).all()
    entropy = randn(0.1).abs() + 0.5
    batch = ppo.Sequences(
        None, None, old_log_prob, values, advantages, returns, None, valid, None, None, ()
    )
    return new_log_prob, entropy, new_value, batch


def terms_and_gradients(loss_function, new_log_prob, entropy, new_value, batch, *settings):
    inputs = [x.clone().requires_grad_() for x in (new_log_prob, entropy, new_value)]
    terms = loss_function(*inputs, batch, *settings)
    loss = terms.policy_loss + 0.5 * terms.value_loss - 0.01 * terms.entropy
    gradients = torch.autograd.grad(loss, inputs)
    return terms, gradients


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("norm_adv", [True, False])
@pytest.mark.parametrize("clip_vloss", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_equals_the_reference(seed, clip_vloss, norm_adv, dtype):
    clip_coef = 0.25  # 1 +- c and the value tie of row 4 are exact in binary
    inputs = loss_inputs(seed, dtype, clip_coef)
    settings = (clip_coef, clip_vloss, norm_adv)
    expected, expected_grads = terms_and_gradients(reference_ppo_loss, *inputs, *settings)
    terms, grads = terms_and_gradients(ppo.ppo_loss, *inputs, *settings)
    tight = {"rtol": 1e-13, "atol": 1e-15} if dtype == torch.float64 else {}
    for name in ppo.LossTerms._fields[:-1]:
        torch.testing.assert_close(getattr(terms, name), getattr(expected, name), **tight)
    torch.testing.assert_close(terms.clipfrac.float(), expected.clipfrac.float())
    for name, a, b in zip(("log_prob", "entropy", "value"), grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, **tight, msg=lambda m, name=name: f"d/d {name}: {m}")
    assert not terms.approx_kl.requires_grad and not terms.clipfrac.requires_grad


def test_masked_steps_add_no_gradient():
    """Steps with ``valid == 0`` (padding, reset-only steps) get exactly zero gradient."""
    new_log_prob, entropy, new_value, batch = loss_inputs(3, torch.float64, 0.2)
    settings = (0.2, True, True)
    _, grads = terms_and_gradients(ppo.ppo_loss, new_log_prob, entropy, new_value, batch, *settings)
    masked = batch.valid == 0
    assert masked.any()
    for grad in grads:
        assert torch.all(grad[masked] == 0) and grad[~masked].abs().sum() > 0


# --- the optimizer ----------------------------------------------------------------------------


def test_make_optimizer_is_torchs_fused_adam():
    """Plain ``torch.optim.Adam(fused=True)``: the same steps as building it by hand."""
    from tests.test_tbptt import collect

    policy, rollout, advantages, returns = collect("lstm", rollout_len=16, bptt_len=8)
    config = PPOConfig(rollout_len=16, bptt_len=8, num_minibatches=2, update_epochs=2)
    optimizer = optim.make_optimizer(policy, config)
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["fused"]
    reference = copy.deepcopy(policy)
    torch_optimizer = torch.optim.Adam(
        reference.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=True
    )
    for model, opt in ((policy, optimizer), (reference, torch_optimizer)):
        ppo.update(
            model, opt, rollout, advantages, returns, config, torch.Generator().manual_seed(0)
        )
    for p, q in zip(policy.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)


def test_clip_range_anneals_to_zero_only_when_asked():
    from recurrl.algo.ppo import clip_coef_at
    from recurrl.config import PPOConfig

    constant = PPOConfig(total_steps=1000, clip_coef=0.2)
    assert clip_coef_at(constant, 0) == clip_coef_at(constant, 900) == 0.2
    annealed = PPOConfig(total_steps=1000, clip_coef=0.2, anneal_clip=True)
    assert [round(clip_coef_at(annealed, s), 6) for s in (0, 500, 1000, 2000)] == [0.2, 0.1, 0, 0]
