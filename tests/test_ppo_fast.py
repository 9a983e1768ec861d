"""The fused PPO loss against the plain autograd composition; the optimizer step's fast paths
against torch's ``clip_grad_norm_`` and fused ``Adam``."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from recurrl.algo import optim, ppo
from recurrl.config import PPOConfig

# --- the fused loss ---------------------------------------------------------------------------


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def reference_ppo_loss(new_log_prob, entropy, new_value, batch, clip_coef, clip_vloss, norm_adv):
    """The clipped PPO objective as plain autograd operations (what ``ppo_loss`` fuses)."""
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
def test_fused_loss_equals_autograd_composition(seed, clip_vloss, norm_adv, dtype):
    clip_coef = 0.25  # 1 +- c and the value tie of row 4 are exact in binary
    inputs = loss_inputs(seed, dtype, clip_coef)
    settings = (clip_coef, clip_vloss, norm_adv)
    expected, expected_grads = terms_and_gradients(reference_ppo_loss, *inputs, *settings)
    terms, grads = terms_and_gradients(ppo.ppo_loss, *inputs, *settings)
    tight = {"rtol": 1e-13, "atol": 1e-15} if dtype == torch.float64 else {}
    for name in ppo.LossTerms._fields[:-1]:
        torch.testing.assert_close(getattr(terms, name), getattr(expected, name), **tight)
    torch.testing.assert_close(terms.clipfrac.float(), expected.clipfrac)  # float32 there
    for name, a, b in zip(("log_prob", "entropy", "value"), grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, **tight, msg=lambda m, name=name: f"d/d {name}: {m}")
    assert not terms.approx_kl.requires_grad and not terms.clipfrac.requires_grad


def test_fused_loss_ties_split_the_gradient_like_maximum():
    """On an exact tie outside the value clip autograd sends half the gradient each way."""
    clip_coef, settings = 0.25, (0.25, True, False)
    new_log_prob, entropy, new_value, batch = loss_inputs(0, torch.float64, clip_coef)
    batch = batch._replace(valid=torch.ones_like(batch.valid))
    inputs = (new_log_prob, entropy, new_value, batch)
    _, expected = terms_and_gradients(reference_ppo_loss, *inputs, *settings)
    _, grads = terms_and_gradients(ppo.ppo_loss, *inputs, *settings)
    # Row 4: v - R = 0.75, V + c - R = -0.75 (clipped, no gradient): d/dv of
    # 0.5 * 0.5 * mean(max(...)) is 0.5 * 0.5 * (1/2) * 2 * 0.75 / n per step.
    half = torch.full((9,), 0.5 * 0.5 * 0.75 / batch.valid.numel(), dtype=torch.float64)
    assert torch.equal(expected[2][4], half)
    torch.testing.assert_close(grads[2], expected[2], rtol=1e-13, atol=1e-15)


def test_fused_loss_trains_a_policy_like_the_autograd_composition():
    """Whole-policy gradients through the fused loss equal those through the reference."""
    from tests.test_tbptt import collect

    policy, rollout, advantages, returns = collect("lstm", rollout_len=16, bptt_len=8)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = ppo.make_sequences(rollout, advantages, returns, 8)
    gradients = []
    for loss_function in (ppo.ppo_loss, reference_ppo_loss):
        out = policy.evaluate_actions(
            batch.obs, batch.actions, batch.start_states, batch.episode_start
        )
        terms = loss_function(out.log_prob, out.entropy, out.value, batch, 0.2, True, True)
        policy.zero_grad()
        (terms.policy_loss + 0.5 * terms.value_loss - 0.01 * terms.entropy).backward()
        gradients.append([p.grad.clone() for p in policy.parameters()])
    for a, b in zip(*gradients, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# --- the optimizer step -----------------------------------------------------------------------


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def set_gradients(model: torch.nn.Module, seed: int, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = scale * torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("scale", [1e-3, 10.0, math.inf])
def test_clip_grad_norm_is_torchs_bit_for_bit(scale):
    ours, theirs = small_model(), small_model()
    set_gradients(ours, 0, scale)
    set_gradients(theirs, 0, scale)
    norm = optim.clip_grad_norm_(list(ours.parameters()), 0.5)
    expected = torch.nn.utils.clip_grad_norm_(list(theirs.parameters()), 0.5)
    assert torch.equal(norm, expected) or (norm.isnan() and expected.isnan())
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad) or (a.grad.isnan().all() and b.grad.isnan().all())


def test_clip_grad_norm_falls_back_for_mixed_dtypes_and_missing_gradients():
    model = small_model()
    set_gradients(model, 1)
    model[2].bias.grad = None
    reference = small_model()
    set_gradients(reference, 1)
    reference[2].bias.grad = None
    norm = optim.clip_grad_norm_(list(model.parameters()), 0.1)
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 0.1))
    model[0].double()
    reference[0].double()
    norm = optim.clip_grad_norm_(list(model.parameters()), 0.1)
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 0.1))
    assert optim.clip_grad_norm_([torch.nn.Parameter(torch.ones(2))], 1.0) == 0.0


def adam_pair(**settings):
    ours, theirs = small_model(), small_model()
    a = optim.CachedFusedAdam(list(ours.parameters()), lr=0.01, **settings)
    b = torch.optim.Adam(list(theirs.parameters()), lr=0.01, fused=True, **settings)
    return ours, a, theirs, b


def step_both(pair, seed: int) -> None:
    ours, a, theirs, b = pair
    for model, optimizer in ((ours, a), (theirs, b)):
        set_gradients(model, seed)
        optimizer.step()


def assert_same(pair) -> None:
    ours, a, theirs, b = pair
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    assert state_a["state"].keys() == state_b["state"].keys()
    for index, state in state_a["state"].items():
        other = state_b["state"][index]
        assert state.keys() == other.keys()
        for key, value in state.items():
            assert value.dtype == other[key].dtype and value.device == other[key].device
            assert torch.equal(value, other[key]), (index, key)


def test_cached_adam_is_torchs_fused_adam_bit_for_bit(monkeypatch):
    pair = adam_pair()
    kernel_calls = []
    original = torch._fused_adam_
    monkeypatch.setattr(
        torch, "_fused_adam_", lambda *a, **k: kernel_calls.append(1) or original(*a, **k)
    )
    for seed in range(6):
        if seed == 3:
            for optimizer in pair[1::2]:  # the trainer anneals the learning rate like this
                optimizer.param_groups[0]["lr"] = 0.003
        step_both(pair, seed)
        assert_same(pair)
    assert pair[1]._kept is not None and len(kernel_calls) == 12


def test_cached_adam_after_load_state_dict_and_deepcopy():
    pair = adam_pair()
    for seed in range(3):
        step_both(pair, seed)
    saved = copy.deepcopy(pair[1].state_dict())
    step_both(pair, 3)
    for optimizer in pair[1::2]:  # back to before step 3, as the trainer's rollback does
        optimizer.load_state_dict(copy.deepcopy(saved))  # loading shares the tensors
    assert pair[1]._kept is None
    ours, theirs = pair[0], pair[2]
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            p.add_(1.0)
            q.add_(1.0)
    for seed in range(4, 7):
        step_both(pair, seed)
        assert_same(pair)
    copied = copy.deepcopy(pair[1])  # through __getstate__ / __setstate__: no kept lists
    assert copied._kept is None
    copied.step()  # its own parameters (copies, without gradients): nothing to do
    step_both(pair, 8)
    assert_same(pair)


@pytest.mark.parametrize("settings", [{"amsgrad": True}, {"weight_decay": 0.1}, {"maximize": True}])
def test_cached_adam_unusual_settings_take_torchs_step(settings, monkeypatch):
    torch_steps = count_torch_steps(monkeypatch)
    pair = adam_pair(**settings)
    for seed in range(4):
        step_both(pair, seed)
        assert_same(pair)
    assert len(torch_steps) == 4


def test_cached_adam_missing_gradients_and_new_groups_take_torchs_step(monkeypatch):
    torch_steps = count_torch_steps(monkeypatch)
    pair = adam_pair()
    step_both(pair, 0)
    step_both(pair, 1)
    assert len(torch_steps) == 1
    for model, optimizer in ((pair[0], pair[1]), (pair[2], pair[3])):
        set_gradients(model, 2)
        model[2].bias.grad = None
        optimizer.step()
    assert_same(pair)
    assert len(torch_steps) == 2
    step_both(pair, 3)  # the bias's step count lags one now; the lists hold
    step_both(pair, 4)
    assert_same(pair)
    assert len(torch_steps) == 2
    extra = [torch.nn.Parameter(torch.ones(3)) for _ in range(2)]
    pair[1].add_param_group({"params": [extra[0]], "lr": 0.1})
    pair[3].add_param_group({"params": [extra[1]], "lr": 0.1})
    for seed in range(5, 8):
        for parameter in extra:
            parameter.grad = torch.full((3,), 0.5 * seed)
        step_both(pair, seed)
        assert_same(pair)
    assert torch.equal(extra[0], extra[1])
    assert len(torch_steps) == 5


def test_cached_adam_takes_torchs_step_when_the_kernel_refuses_its_arguments(monkeypatch):
    pair = adam_pair()
    step_both(pair, 0)  # torch's step, lists kept
    original, refused = torch._fused_adam_, []

    def kernel(*args, **kwargs):  # refuses the first call (ours), as a changed signature would
        if not refused:
            refused.append(1)
            raise TypeError("unexpected keyword argument")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", kernel)
    torch_steps = count_torch_steps(monkeypatch)
    for seed in range(1, 4):
        step_both(pair, seed)
        assert_same(pair)  # the step counts were put back before torch's step
    assert refused and len(torch_steps) == 3 and not pair[1]._direct


def count_torch_steps(monkeypatch) -> list:
    calls = []
    original = optim._adam_step

    def counted(optimizer, closure):
        calls.append(1)
        return original(optimizer, closure)

    monkeypatch.setattr(optim, "_adam_step", counted)
    return calls


def test_cached_adam_runs_step_hooks_once():
    torch.optim.Adam(small_model().parameters(), fused=True)  # torch wraps Adam.step
    model = small_model()
    optimizer = optim.CachedFusedAdam(list(model.parameters()), lr=0.01)
    calls = []
    optimizer.register_step_pre_hook(lambda *args: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *args: calls.append("post"))
    for seed in range(3):  # torch's step, then the kept lists
        set_gradients(model, seed)
        optimizer.step()
    assert calls == ["pre", "post"] * 3


def test_make_optimizer_and_update_use_the_fast_paths():
    from tests.test_tbptt import collect

    policy, rollout, advantages, returns = collect("lstm", rollout_len=16, bptt_len=8)
    config = PPOConfig(rollout_len=16, bptt_len=8, num_minibatches=2, update_epochs=2)
    optimizer = optim.make_optimizer(policy, config)
    assert isinstance(optimizer, optim.CachedFusedAdam)
    reference = copy.deepcopy(policy)
    torch_optimizer = torch.optim.Adam(
        reference.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=True
    )
    for model, opt in ((policy, optimizer), (reference, torch_optimizer)):
        ppo.update(
            model, opt, rollout, advantages, returns, config, torch.Generator().manual_seed(0)
        )
    assert optimizer._kept is not None
    for p, q in zip(policy.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
