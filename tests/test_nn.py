"""Recurrent cores: parity with torch.nn.LSTM/GRU, no leakage across episode starts, stepping."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recurrl.nn import GRU, LSTM

KINDS = {"lstm": (LSTM, torch.nn.LSTM), "gru": (GRU, torch.nn.GRU)}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_pair(kind: str, input_size: int, hidden_size: int, num_layers: int, dtype):
    """Our core and the torch module with identical weights."""
    ours_cls, torch_cls = KINDS[kind]
    theirs = torch_cls(input_size, hidden_size, num_layers).to(dtype)
    ours = ours_cls(input_size, hidden_size, num_layers).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def random_state(kind: str, num_layers: int, batch: int, hidden: int, dtype, grad=False):
    """A non-zero state in our format (tuple for LSTM, tensor for GRU)."""
    parts = [
        torch.randn(num_layers, batch, hidden, dtype=dtype)
        for _ in range(2 if kind == "lstm" else 1)
    ]
    for part in parts:
        part.requires_grad_(grad)
    return tuple(parts) if kind == "lstm" else parts[0]


def flat(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def assert_close(actual, expected, tol: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def loss_of(y: torch.Tensor, state, weights: list[torch.Tensor]) -> torch.Tensor:
    """A scalar that depends on every output and final state with distinct weights."""
    total = (y * weights[0]).sum()
    for part, weight in zip(flat(state), weights[1:], strict=True):
        total = total + (part * weight).sum()
    return total


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equals_torch_module_outputs_states_and_gradients(kind, num_layers, dtype):
    torch.manual_seed(0)
    steps, batch, input_size, hidden = 7, 5, 3, 6
    ours, theirs = make_pair(kind, input_size, hidden, num_layers, dtype)
    x = torch.randn(steps, batch, input_size, dtype=dtype, requires_grad=True)
    state = random_state(kind, num_layers, batch, hidden, dtype, grad=True)

    y, final = ours(x, state, torch.zeros(steps, batch))
    y_ref, final_ref = theirs(x, state)
    tol = TOLERANCE[dtype]
    assert_close(y, y_ref, tol)
    for part, part_ref in zip(flat(final), flat(final_ref), strict=True):
        assert_close(part, part_ref, tol)

    weights = [torch.randn_like(y)] + [torch.randn_like(part) for part in flat(final)]
    inputs = [x, *flat(state)]
    grads = torch.autograd.grad(loss_of(y, final, weights), inputs + list(ours.parameters()))
    grads_ref = torch.autograd.grad(
        loss_of(y_ref, final_ref, weights), inputs + list(theirs.parameters())
    )
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        assert_close(grad, grad_ref, 10 * tol)


def segments(starts: list[bool]) -> list[tuple[int, int]]:
    """``[begin, end)`` of each episode segment of one row; a segment begins at each start."""
    bounds = [0] + [t for t in range(1, len(starts)) if starts[t]] + [len(starts)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def slice_state(state, row: int):
    return (
        tuple(p[:, row : row + 1] for p in state)
        if isinstance(state, tuple)
        else state[:, row : row + 1]
    )


def zero_like_state(state):
    return (
        tuple(torch.zeros_like(p) for p in state)
        if isinstance(state, tuple)
        else torch.zeros_like(state)
    )


def assert_reset_equivalence(core, x, state, episode_start, tol: float) -> None:
    """Each episode segment of each row equals that segment run alone from a fresh state."""
    y, final = core(x, state, episode_start)
    for row in range(x.shape[1]):
        starts = episode_start[:, row].bool().tolist()
        row_state = slice_state(state, row)
        for begin, end in segments(starts):
            fresh = zero_like_state(row_state) if starts[begin] else row_state
            zeros = torch.zeros(end - begin, 1)
            y_alone, final_alone = core(x[begin:end, row : row + 1], fresh, zeros)
            assert_close(y[begin:end, row : row + 1], y_alone, tol)
        for part, part_alone in zip(flat(final), flat(final_alone), strict=True):
            assert_close(part[:, row : row + 1], part_alone, tol)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_no_leakage_across_episode_starts(kind, num_layers):
    torch.manual_seed(1)
    steps, batch, input_size, hidden = 12, 6, 3, 5
    core, _ = make_pair(kind, input_size, hidden, num_layers, torch.float64)
    x = torch.randn(steps, batch, input_size, dtype=torch.float64)
    state = random_state(kind, num_layers, batch, hidden, torch.float64)
    episode_start = torch.rand(steps, batch) < 0.25
    episode_start[0, 0] = True  # reset at t = 0
    episode_start[4:7, 1] = True  # consecutive resets
    episode_start[-1, 2] = True  # reset at the last step
    episode_start[:, 3] = False  # one long episode from the given state
    assert_reset_equivalence(core, x, state, episode_start, 1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_float_and_bool_episode_start_agree(kind):
    torch.manual_seed(2)
    core, _ = make_pair(kind, 3, 4, 1, torch.float32)
    x = torch.randn(6, 4, 3)
    state = random_state(kind, 1, 4, 4, torch.float32)
    episode_start = torch.rand(6, 4) < 0.3
    y_bool, _ = core(x, state, episode_start)
    y_float, _ = core(x, state, episode_start.float())
    assert torch.equal(y_bool, y_float)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_reset_at_start_cuts_gradient_to_initial_state(kind, num_layers):
    torch.manual_seed(3)
    steps, batch, hidden = 5, 4, 3
    core, _ = make_pair(kind, 2, hidden, num_layers, torch.float64)
    x = torch.randn(steps, batch, 2, dtype=torch.float64, requires_grad=True)
    state = random_state(kind, num_layers, batch, hidden, torch.float64, grad=True)
    episode_start = torch.zeros(steps, batch, dtype=torch.bool)
    episode_start[0, 1] = True
    episode_start[0, 3] = True
    episode_start[2, 2] = True  # a later reset: the first two steps still see the state
    y, final = core(x, state, episode_start)
    weights = [torch.randn_like(y)] + [torch.randn_like(p) for p in flat(final)]
    grads = torch.autograd.grad(loss_of(y, final, weights), flat(state))
    for grad in grads:
        assert torch.all(grad[:, 1] == 0) and torch.all(grad[:, 3] == 0)
        assert torch.all(grad[:, 0] != 0) and torch.all(grad[:, 2] != 0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_stepping_equals_one_unroll(kind, num_layers):
    torch.manual_seed(4)
    steps, batch, input_size, hidden = 9, 4, 3, 5
    core, _ = make_pair(kind, input_size, hidden, num_layers, torch.float64)
    x = torch.randn(steps, batch, input_size, dtype=torch.float64)
    state = random_state(kind, num_layers, batch, hidden, torch.float64)
    episode_start = torch.rand(steps, batch) < 0.3
    episode_start[0, 0] = True
    y, final = core(x, state, episode_start)
    stepped, outputs = state, []
    with torch.inference_mode():
        for t in range(steps):
            y_t, stepped = core(x[t : t + 1], stepped, episode_start[t : t + 1])
            outputs.append(y_t)
    assert_close(torch.cat(outputs), y.detach(), 1e-10)
    for part, part_stepped in zip(flat(final), flat(stepped), strict=True):
        assert_close(part_stepped, part.detach(), 1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_default_state_is_zero(kind):
    torch.manual_seed(5)
    core, _ = make_pair(kind, 3, 4, 2, torch.float32)
    x = torch.randn(5, 2, 3)
    state = core.initial_state(2)
    for part in flat(state):
        assert part.shape == (2, 2, 4) and torch.all(part == 0)
    y_default, _ = core(x)
    y_zero, _ = core(x, state, torch.zeros(5, 2))
    assert torch.equal(y_default, y_zero)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_shape_errors_name_the_shapes(kind):
    core, _ = make_pair(kind, 3, 4, 2, torch.float32)
    x = torch.randn(5, 2, 3)
    state = core.initial_state(2)
    with pytest.raises(ValueError, match=r"\[5, 2, 7\]"):
        core(torch.randn(5, 2, 7), state, torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        core(torch.randn(2, 3), state, torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\[5, 3\]"):
        core(x, state, torch.zeros(5, 3))
    bad_state = core.initial_state(3)
    with pytest.raises(ValueError, match=r"\[2, 3, 4\]"):
        core(x, bad_state, torch.zeros(5, 2))


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["lstm", "gru"]),
    num_layers=st.integers(1, 2),
    steps=st.integers(1, 8),
    batch=st.integers(1, 3),
    mask_bits=st.integers(0, 2**24 - 1),
    seed=st.integers(0, 2**16),
)
def test_reset_equivalence_property(kind, num_layers, steps, batch, mask_bits, seed):
    torch.manual_seed(seed)
    core, _ = make_pair(kind, 2, 3, num_layers, torch.float64)
    x = torch.randn(steps, batch, 2, dtype=torch.float64)
    state = random_state(kind, num_layers, batch, 3, torch.float64)
    bits = [(mask_bits >> i) & 1 for i in range(steps * batch)]
    episode_start = torch.tensor(bits, dtype=torch.bool).view(steps, batch)
    assert_reset_equivalence(core, x, state, episode_start, 1e-10)


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("frozen", [False, True])
def test_step_equals_forward_over_one_step(cls, frozen):
    """``step`` (acting: the native kernels called directly) == ``forward`` on ``x[None]``."""
    from recurrl.nn.native import frozen_weights

    torch.manual_seed(3)
    core = cls(5, 9, num_layers=2)
    x, start = torch.randn(4, 5), torch.tensor([0.0, 1.0, 0.0, 1.0])
    state = core.initial_state(4)
    state = tuple(torch.randn_like(s) for s in state) if cls is LSTM else torch.randn_like(state)
    with torch.no_grad(), frozen_weights() if frozen else torch.no_grad():
        y, after = core.step(x, state, start)
        y_ref, after_ref = core(x[None], state, start[None])
    assert torch.equal(y, y_ref[0])
    pairs = zip(after, after_ref, strict=True) if cls is LSTM else [(after, after_ref)]
    for got, want in pairs:
        assert torch.equal(got, want)
