"""The Elman RNN and minGRU cores: stepping, resets, gradients against slow loops, torch parity,
checkpoints and a tiny training run with each."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

import recurrl
from recurrl.app.cli import main
from recurrl.config import ConfigError, PolicyConfig, load_config
from recurrl.nn import RNN, MinGRU
from recurrl.nn.mingru import SOLVERS, linear_recurrence
from recurrl.policy.cores import make_core
from recurrl.run.checkpoints import load_checkpoint
from recurrl.run.train import train
from tests.conftest import interrupt_after

CORES = {"rnn": RNN, "mingru": MinGRU}
KINDS = list(CORES)
F64 = torch.float64


def slow_rnn(x, h0, episode_start, core):
    """The Elman recurrence as a plain Python loop over steps, rows and layers."""
    steps, batch, _ = x.shape
    h = [[h0[layer, b] for b in range(batch)] for layer in range(core.num_layers)]
    ys = []
    for t in range(steps):
        row_outputs = []
        for b in range(batch):
            inp = x[t, b]
            for layer in range(core.num_layers):
                w_ih, w_hh, b_ih, b_hh = core.layer_weights(layer)
                prev = h[layer][b] * 0 if episode_start[t, b] else h[layer][b]
                h[layer][b] = torch.tanh(w_ih @ inp + b_ih + w_hh @ prev + b_hh)
                inp = h[layer][b]
            row_outputs.append(inp)
        ys.append(torch.stack(row_outputs))
    state = torch.stack([torch.stack(h[layer]) for layer in range(core.num_layers)])
    return torch.stack(ys), state


def slow_mingru(x, h0, episode_start, core):
    """The minGRU recurrence as a plain Python loop over steps, rows and layers."""
    steps, batch, _ = x.shape
    hidden = core.hidden_size
    h = [[h0[layer, b] for b in range(batch)] for layer in range(core.num_layers)]
    ys = []
    for t in range(steps):
        row_outputs = []
        for b in range(batch):
            inp = x[t, b]
            for layer in range(core.num_layers):
                weight, bias = core.layer_weights(layer)
                z = torch.sigmoid(weight[:hidden] @ inp + bias[:hidden])
                candidate = weight[hidden:] @ inp + bias[hidden:]
                prev = h[layer][b] * 0 if episode_start[t, b] else h[layer][b]
                h[layer][b] = (1 - z) * prev + z * candidate
                inp = h[layer][b]
            row_outputs.append(inp)
        ys.append(torch.stack(row_outputs))
    state = torch.stack([torch.stack(h[layer]) for layer in range(core.num_layers)])
    return torch.stack(ys), state


SLOW = {"rnn": slow_rnn, "mingru": slow_mingru}
FAST = {"rnn": ("fused",), "mingru": ("loop", "scan")}


def build(kind: str, num_layers: int, input_size: int = 3, hidden: int = 5, dtype=F64):
    torch.manual_seed(1)
    return CORES[kind](input_size, hidden, num_layers).to(dtype)


def inputs(steps=9, batch=4, input_size=3, hidden=5, num_layers=1, reset_prob=0.25, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, input_size, generator=generator, dtype=F64)
    h0 = torch.randn(num_layers, batch, hidden, generator=generator, dtype=F64)
    episode_start = torch.rand(steps, batch, generator=generator) < reset_prob
    episode_start[3, 1] = True  # at least one reset inside the chunk
    return x, h0, episode_start


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_sequence_equals_step_by_step(kind, num_layers):
    core = build(kind, num_layers)
    x, h0, episode_start = inputs(num_layers=num_layers)
    y, h = core(x, h0, episode_start)
    state, outputs = h0, []
    for t in range(x.shape[0]):
        out, state = core.step(x[t], state, episode_start[t])
        outputs.append(out)
    torch.testing.assert_close(torch.stack(outputs), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_nothing_crosses_an_episode_start(kind, num_layers):
    core = build(kind, num_layers)
    x, h0, _ = inputs(num_layers=num_layers)
    for cut in (0, 4, 8):
        episode_start = torch.zeros(x.shape[:2], dtype=torch.bool)
        episode_start[cut] = True
        y, h = core(x, h0, episode_start)
        fresh_y, fresh_h = core(x[cut:])  # from the zero state
        torch.testing.assert_close(y[cut:], fresh_y, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h, fresh_h, rtol=1e-12, atol=1e-12)
    # One row resetting leaves the other rows as they were.
    episode_start = torch.zeros(x.shape[:2], dtype=torch.bool)
    episode_start[5, 2] = True
    y, _ = core(x, h0, episode_start)
    y_none, _ = core(x, h0, torch.zeros_like(episode_start))
    rows = [0, 1, 3]
    torch.testing.assert_close(y[:, rows], y_none[:, rows], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[5:, 2], core(x[5:, 2:3])[0][:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_outputs_and_gradients_equal_the_slow_loop(kind, num_layers):
    core = build(kind, num_layers)
    x, h0, episode_start = inputs(num_layers=num_layers)
    x.requires_grad_()
    h0.requires_grad_()
    generator = torch.Generator().manual_seed(5)
    dy = torch.randn(x.shape[0], x.shape[1], core.hidden_size, generator=generator, dtype=F64)
    dh = torch.randn_like(h0)
    leaves = [x, h0, *core.parameters()]

    def results(y, h):
        return [y, h, *torch.autograd.grad((y * dy).sum() + (h * dh).sum(), leaves)]

    expected = results(*SLOW[kind](x, h0, episode_start, core))
    for impl in ("reference", *FAST[kind], "auto"):
        core.impl = impl
        actual = results(*core(x, h0, episode_start))
        for a, e in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
    assert core._implementation(x) != "reference"  # auto is the fast path


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_rnn_loads_torch_state_dict_and_matches_its_outputs(num_layers, dtype):
    torch.manual_seed(0)
    theirs = torch.nn.RNN(3, 6, num_layers, nonlinearity="tanh").to(dtype)
    ours = RNN(3, 6, num_layers).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(7, 5, 3, dtype=dtype)
    h0 = torch.randn(num_layers, 5, 6, dtype=dtype)
    tol = 1e-12 if dtype == F64 else 1e-5
    for impl in ("auto", "fused", "reference"):
        ours.impl = impl
        for state in (None, h0):
            y, h = ours(x, state)
            y_torch, h_torch = theirs(x, state)
            torch.testing.assert_close(y, y_torch, rtol=tol, atol=tol)
            torch.testing.assert_close(h, h_torch, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_other_implementations_are_refused(kind):
    with pytest.raises(ValueError, match="impl"):
        CORES[kind](3, 4, impl="native")
    core = CORES[kind](3, 4)
    core.impl = "triton"
    with pytest.raises(ValueError, match="impl"):
        core(torch.zeros(2, 1, 3))


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 13, 64])
@pytest.mark.parametrize("solver", ["scan", "loop"])
def test_linear_recurrence_and_its_backward_equal_the_step_loop(steps, solver):
    generator = torch.Generator().manual_seed(steps)
    factors = torch.rand(steps, 3, 2, generator=generator, dtype=F64)
    factors[steps // 2, 1] = 0.0  # a reset: nothing before it reaches past it
    terms = torch.randn(steps, 3, 2, generator=generator, dtype=F64)
    factors.requires_grad_()
    terms.requires_grad_()
    h, expected = torch.zeros(3, 2, dtype=F64), []
    for t in range(steps):
        h = terms[t] + factors[t] * h
        expected.append(h)
    expected = torch.stack(expected)
    actual = linear_recurrence(factors, terms, solver)
    torch.testing.assert_close(actual, expected)
    dh = torch.randn(expected.shape, generator=generator, dtype=F64)
    grads = torch.autograd.grad((actual * dh).sum(), [factors, terms])
    expected_grads = torch.autograd.grad((expected * dh).sum(), [factors, terms])
    for a, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e)
    with torch.no_grad():
        torch.testing.assert_close(SOLVERS[solver](factors, terms), expected)


def test_mingru_long_chunk_with_resets_agrees_in_float32():
    torch.manual_seed(0)
    core = MinGRU(4, 8, 2)
    x = torch.randn(256, 6, 4) * 3
    episode_start = torch.rand(256, 6) < 0.05
    x.requires_grad_()
    results = {}
    for impl in ("scan", "loop", "reference"):
        core.impl = impl
        y, h = core(x, None, episode_start)
        results[impl] = [y, h, *torch.autograd.grad((y * y).sum(), [x, *core.parameters()])]
    for impl in ("scan", "loop"):
        for a, e in zip(results[impl], results["reference"], strict=True):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_learned_initial_state_and_refused_layer_norm(kind):
    core = make_core(kind, 3, 5, 2, "tanh", learned_initial_state=True).double()
    x, _, episode_start = inputs(num_layers=2)
    y, state = core(x, core.initial_state(4), episode_start)
    assert y.shape == (9, 4, 5) and len(state) == 1 and state[0].shape == (2, 4, 5)
    y.sum().backward()
    assert core.initial[0].grad is not None
    with pytest.raises(ValueError, match="policy.layer_norm"):
        make_core(kind, 3, 5, 1, "tanh", layer_norm=True)
    with pytest.raises(ConfigError, match="policy.layer_norm"):
        load_config(None, [f"policy.core={kind}", "policy.layer_norm=true"])
    assert PolicyConfig(core=kind).core == kind


TMAZE = [
    "env.id=recurrl/TMaze-v0",
    "env.num_envs=4",
    "device=cpu",
    "ppo.total_steps=2048",
    "ppo.rollout_len=32",
    "ppo.bptt_len=8",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=2",
    "policy.hidden_size=16",
    "policy.encoder_sizes=[16]",
    "run.checkpoint_every=256",
]


@pytest.mark.parametrize("kind", KINDS)
def test_train_checkpoint_and_resume(kind, tmp_path, monkeypatch, capsys):
    overrides = [*TMAZE, f"policy.core={kind}"]
    result = train(load_config(None, [*overrides, f"run.dir={tmp_path / 'a'}"]), quiet=True)
    assert result.global_step == 2048
    loaded = recurrl.load_policy(tmp_path / "a" / "checkpoints" / "final.pt")
    obs = np.random.default_rng(0).normal(size=(4, *result.policy.observation_space.shape))
    obs = obs.astype(np.float32)
    a, state_a = loaded.act(obs, None, True, deterministic=True)
    b, state_b = result.policy.act(obs, None, True, deterministic=True)
    assert np.array_equal(a, b)
    for part_a, part_b in zip(state_a, state_b, strict=True):
        torch.testing.assert_close(part_a, part_b)

    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)
        stopped = train(load_config(None, [*overrides, f"run.dir={tmp_path / 'b'}"]), True)
    assert stopped.interrupted == signal.SIGTERM
    assert main(["train", "--resume", str(tmp_path / "b"), "--quiet", "--eval-episodes=0"]) == 0
    final_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "final.pt")["policy"]
    final_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "final.pt")["policy"]
    assert any("core" in key for key in final_a)
    for key, value in final_a.items():
        assert torch.equal(value, final_b[key]), key
