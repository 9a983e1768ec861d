"""The Triton kernels of the reset-aware LSTM and GRU layers (imported only when triton is).

Each kernel runs a whole sequence: one launch per layer and direction, a grid of
``ceil(B / BLOCK_B)`` programs, each owning ``BLOCK_B`` batch rows for all ``T`` steps. A step is
computed in column tiles of ``BLOCK_N`` hidden units: the recurrent product of the tile
(``tl.dot`` over ``BLOCK_K``-wide slices of the previous state and of ``W_hh``, whose tiles are
re-read every step and stay in L2) and its gate maths, fused. The state a step needs from every
column is the one the program wrote at the previous step: it is read back from the
``[T + 1, B, H]`` state buffer (L2, loads with ``cache_modifier=".cg"``) after a
``tl.debug_barrier()`` that ends each step; a program's own columns never wait on another
program, so there is no grid-wide synchronisation. Any ``H`` and ``B`` work: tiles past ``H``
or ``B`` are masked.

Memory layout: every tensor is contiguous, time-major. ``gx[T, B, G*H]`` holds the input part
of the gates (``x @ W_ih^T`` plus biases, computed before the launch as one GEMM), gate blocks in
torch's order (LSTM ``i, f, g, o``; GRU ``r, z, n``); ``w[G*H, H]`` is ``W_hh``; ``keep[T, B]``
is 0 where a row's state resets before step ``t``. ``hs[T + 1, B, H]`` holds the state entering
each step (``hs[0]`` = the initial state, ``hs[t + 1]`` = the output ``y[t]``), unmasked:
kernels multiply it by ``keep[t]`` as they read it.

Only ``tl`` builtins are used (``tl.full``, not ``tl.zeros``, which is a ``@triton.jit``
function of triton's own): the interpreter then runs the kernels even when triton was imported
before ``TRITON_INTERPRET`` was set. Activations are written with ``exp`` only: ``sigmoid(u) =
1 / (1 + exp(-u))`` and ``tanh(u) = 2 sigmoid(2u) - 1`` (both saturate correctly at +-inf; no
libdevice, so the interpreter runs them too).
"""

from __future__ import annotations

import triton
import triton.language as tl

from recurrl.nn.triton_kernels.support import interpreting

# --------------------------------------------------------------------------------------------
# LSTM


def lstm_forward(
    gx_ptr,  # [T, B, 4H] input part of the gates, both biases included
    w_ptr,  # [4H, H] W_hh
    keep_ptr,  # [T, B]
    hs_ptr,  # [T + 1, B, H] in: hs[0] = h0; out: hs[t + 1] = h_t = y[t]
    cs_ptr,  # [T + 1, B, H] in: cs[0] = c0; out: cs[t + 1] = c_t
    act_ptr,  # [T, B, 4H] out: sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
    T,
    B,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """LSTM forward over ``T`` steps for ``BLOCK_B`` rows: ``y``, every ``c`` and activations.

    Step ``t``, column tile ``n``: ``gates = gx[t] + (keep[t] * hs[t]) @ W_hh^T``; ``c = f *
    keep[t] * cs[t] + i * g``, ``h = o * tanh(c)``.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    cols_n = tl.arange(0, BLOCK_N)
    cols_k = tl.arange(0, BLOCK_K)
    dtype = gx_ptr.dtype.element_ty
    G = 4 * H
    for t in range(T):
        keep = tl.load(keep_ptr + t * B + rows, mask=row_ok, other=0.0)[:, None]
        state = (t * B + rows)[:, None] * H  # row offsets into hs[t], cs[t]
        nxt = ((t + 1) * B + rows)[:, None] * H  # into hs[t + 1], cs[t + 1]
        gate_rows = (t * B + rows)[:, None] * G  # into gx[t], act[t]
        for n0 in range(0, H, BLOCK_N):
            n = n0 + cols_n
            ok = row_ok[:, None] & (n < H)[None, :]
            acc_i = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)
            acc_f = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)
            acc_g = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)
            acc_o = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)
            for k0 in range(0, H, BLOCK_K):
                k = k0 + cols_k
                k_ok = k < H
                h = tl.load(
                    hs_ptr + state + k[None, :],
                    mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0,
                    cache_modifier=".cg",
                )
                h = h * keep
                w_mask = k_ok[:, None] & (n < H)[None, :]
                w_tile = w_ptr + n[None, :] * H + k[:, None]  # W_hh^T slice [BLOCK_K, BLOCK_N]
                w = tl.load(w_tile, mask=w_mask, other=0.0)
                acc_i = tl.dot(h, w, acc_i, input_precision=PRECISION)
                w = tl.load(w_tile + H * H, mask=w_mask, other=0.0)
                acc_f = tl.dot(h, w, acc_f, input_precision=PRECISION)
                w = tl.load(w_tile + 2 * H * H, mask=w_mask, other=0.0)
                acc_g = tl.dot(h, w, acc_g, input_precision=PRECISION)
                w = tl.load(w_tile + 3 * H * H, mask=w_mask, other=0.0)
                acc_o = tl.dot(h, w, acc_o, input_precision=PRECISION)
            gx = gx_ptr + gate_rows + n[None, :]
            i = 1.0 / (1.0 + tl.exp(-(acc_i + tl.load(gx, mask=ok, other=0.0))))
            f = 1.0 / (1.0 + tl.exp(-(acc_f + tl.load(gx + H, mask=ok, other=0.0))))
            g = 2.0 / (1.0 + tl.exp(-2.0 * (acc_g + tl.load(gx + 2 * H, mask=ok, other=0.0))))
            g = g - 1.0
            o = 1.0 / (1.0 + tl.exp(-(acc_o + tl.load(gx + 3 * H, mask=ok, other=0.0))))
            c_prev = tl.load(cs_ptr + state + n[None, :], mask=ok, other=0.0, cache_modifier=".cg")
            c = f * (c_prev * keep) + i * g
            h_new = o * (2.0 / (1.0 + tl.exp(-2.0 * c)) - 1.0)
            tl.store(cs_ptr + nxt + n[None, :], c, mask=ok)
            tl.store(hs_ptr + nxt + n[None, :], h_new, mask=ok)
            act = act_ptr + gate_rows + n[None, :]
            tl.store(act, i, mask=ok)
            tl.store(act + H, f, mask=ok)
            tl.store(act + 2 * H, g, mask=ok)
            tl.store(act + 3 * H, o, mask=ok)
        tl.debug_barrier()  # hs[t + 1] complete before any column of step t + 1 reads it


def lstm_backward(
    dy_ptr,  # [T, B, H] gradient of y, the final h's gradient added to dy[T - 1]
    w_ptr,  # [4H, H] W_hh
    keep_ptr,  # [T, B]
    cs_ptr,  # [T + 1, B, H] from the forward
    act_ptr,  # [T, B, 4H] from the forward
    dg_ptr,  # [T, B, 4H] out: gradient of the gates' pre-activations
    dcs_ptr,  # [T + 1, B, H] in: dcs[T] = gradient of c_T; out: dcs[t] = gradient of cs[t]
    T,
    B,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """LSTM backward in reverse time for ``BLOCK_B`` rows: the gates' gradients of every step.

    Step ``t``, column tile ``n``: ``dh = dy[t] + keep[t + 1] * (dg[t + 1] @ W_hh)`` (the
    recurrent part read back from ``dg``, none at ``t = T - 1``), ``dc = dcs[t + 1] + dh * o *
    (1 - tanh(c)^2)``, then ``dg[t] = [dc g i(1-i), dc keep c_prev f(1-f), dc i (1-g^2), dh
    tanh(c) o(1-o)]`` and ``dcs[t] = keep[t] * dc * f``. The caller finishes ``dh0 = keep[0] *
    (dg[0] @ W_hh)`` and the weight gradients as GEMMs over ``dg``.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    cols_n = tl.arange(0, BLOCK_N)
    cols_k = tl.arange(0, BLOCK_K)
    dtype = dy_ptr.dtype.element_ty
    G = 4 * H
    for step in range(T):
        t = T - 1 - step
        next_ok = row_ok & (tl.full((BLOCK_B,), t + 1, tl.int32) < T)  # rows with a step t + 1
        keep = tl.load(keep_ptr + t * B + rows, mask=row_ok, other=0.0)[:, None]
        keep_next = tl.load(keep_ptr + (t + 1) * B + rows, mask=next_ok, other=0.0)
        state = (t * B + rows)[:, None] * H  # into dy[t], cs[t], dcs[t]
        nxt = ((t + 1) * B + rows)[:, None] * H  # into cs[t + 1], dcs[t + 1]
        gate_rows = (t * B + rows)[:, None] * G  # into act[t], dg[t]
        next_gates = ((t + 1) * B + rows)[:, None] * G  # into dg[t + 1]
        for n0 in range(0, H, BLOCK_N):
            n = n0 + cols_n
            ok = row_ok[:, None] & (n < H)[None, :]
            rec = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)  # dg[t + 1] @ W_hh, this tile
            for gate in tl.static_range(4):
                for k0 in range(0, H, BLOCK_K):
                    k = k0 + cols_k
                    k_ok = k < H
                    d = tl.load(
                        dg_ptr + next_gates + gate * H + k[None, :],
                        mask=next_ok[:, None] & k_ok[None, :],
                        other=0.0,
                        cache_modifier=".cg",
                    )
                    w = tl.load(
                        w_ptr + (gate * H + k[:, None]) * H + n[None, :],
                        mask=k_ok[:, None] & (n < H)[None, :],
                        other=0.0,
                    )
                    rec = tl.dot(d, w, rec, input_precision=PRECISION)
            dh = tl.load(dy_ptr + state + n[None, :], mask=ok, other=0.0) + keep_next[:, None] * rec
            act = act_ptr + gate_rows + n[None, :]
            i = tl.load(act, mask=ok, other=0.0)
            f = tl.load(act + H, mask=ok, other=0.0)
            g = tl.load(act + 2 * H, mask=ok, other=0.0)
            o = tl.load(act + 3 * H, mask=ok, other=0.0)
            c = tl.load(cs_ptr + nxt + n[None, :], mask=ok, other=0.0)
            c_prev = tl.load(cs_ptr + state + n[None, :], mask=ok, other=0.0) * keep
            tanh_c = 2.0 / (1.0 + tl.exp(-2.0 * c)) - 1.0
            dc = tl.load(dcs_ptr + nxt + n[None, :], mask=ok, other=0.0, cache_modifier=".cg")
            dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
            dg = dg_ptr + gate_rows + n[None, :]
            tl.store(dg, dc * g * i * (1.0 - i), mask=ok)
            tl.store(dg + H, dc * c_prev * f * (1.0 - f), mask=ok)
            tl.store(dg + 2 * H, dc * i * (1.0 - g * g), mask=ok)
            tl.store(dg + 3 * H, dh * tanh_c * o * (1.0 - o), mask=ok)
            tl.store(dcs_ptr + state + n[None, :], dc * f * keep, mask=ok)
        tl.debug_barrier()  # dg[t] and dcs[t] complete before step t - 1 reads them


# --------------------------------------------------------------------------------------------
# GRU


def gru_forward(
    gx_ptr,  # [T, B, 3H] input part of the gates, bias_ih included
    w_ptr,  # [3H, H] W_hh
    bias_ptr,  # [3H] bias_hh
    keep_ptr,  # [T, B]
    hs_ptr,  # [T + 1, B, H] in: hs[0] = h0; out: hs[t + 1] = h_t = y[t]
    act_ptr,  # [T, B, 3H] out: r, z, n
    hn_ptr,  # [T, B, H] out: the n block of the recurrent gates, W_hn h + b_hn
    T,
    B,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """GRU forward over ``T`` steps for ``BLOCK_B`` rows: ``y``, activations and ``hn``.

    Step ``t``, column tile ``n``: ``gh = (keep[t] * hs[t]) @ W_hh^T + b_hh``; ``r = sigmoid(gx_r
    + gh_r)``, ``z = sigmoid(gx_z + gh_z)``, ``n = tanh(gx_n + r * gh_n)``, ``h = (1 - z) n + z
    keep[t] hs[t]``.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    cols_n = tl.arange(0, BLOCK_N)
    cols_k = tl.arange(0, BLOCK_K)
    dtype = gx_ptr.dtype.element_ty
    G = 3 * H
    for t in range(T):
        keep = tl.load(keep_ptr + t * B + rows, mask=row_ok, other=0.0)[:, None]
        state = (t * B + rows)[:, None] * H  # into hs[t], hn[t]
        nxt = ((t + 1) * B + rows)[:, None] * H  # into hs[t + 1]
        gate_rows = (t * B + rows)[:, None] * G  # into gx[t], act[t]
        for n0 in range(0, H, BLOCK_N):
            n = n0 + cols_n
            n_ok = n < H
            ok = row_ok[:, None] & n_ok[None, :]
            acc_r = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)
            acc_z = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)
            acc_n = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)
            for k0 in range(0, H, BLOCK_K):
                k = k0 + cols_k
                k_ok = k < H
                h = tl.load(
                    hs_ptr + state + k[None, :],
                    mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0,
                    cache_modifier=".cg",
                )
                h = h * keep
                w_mask = k_ok[:, None] & n_ok[None, :]
                w_tile = w_ptr + n[None, :] * H + k[:, None]  # W_hh^T slice [BLOCK_K, BLOCK_N]
                w = tl.load(w_tile, mask=w_mask, other=0.0)
                acc_r = tl.dot(h, w, acc_r, input_precision=PRECISION)
                w = tl.load(w_tile + H * H, mask=w_mask, other=0.0)
                acc_z = tl.dot(h, w, acc_z, input_precision=PRECISION)
                w = tl.load(w_tile + 2 * H * H, mask=w_mask, other=0.0)
                acc_n = tl.dot(h, w, acc_n, input_precision=PRECISION)
            gx = gx_ptr + gate_rows + n[None, :]
            b_r = tl.load(bias_ptr + n, mask=n_ok, other=0.0)[None, :]
            b_z = tl.load(bias_ptr + H + n, mask=n_ok, other=0.0)[None, :]
            b_n = tl.load(bias_ptr + 2 * H + n, mask=n_ok, other=0.0)[None, :]
            r = 1.0 / (1.0 + tl.exp(-(acc_r + b_r + tl.load(gx, mask=ok, other=0.0))))
            z = 1.0 / (1.0 + tl.exp(-(acc_z + b_z + tl.load(gx + H, mask=ok, other=0.0))))
            hn = acc_n + b_n
            u = tl.load(gx + 2 * H, mask=ok, other=0.0) + r * hn
            new = 2.0 / (1.0 + tl.exp(-2.0 * u)) - 1.0
            h_prev = tl.load(hs_ptr + state + n[None, :], mask=ok, other=0.0, cache_modifier=".cg")
            h_new = (1.0 - z) * new + z * (h_prev * keep)
            tl.store(hs_ptr + nxt + n[None, :], h_new, mask=ok)
            tl.store(hn_ptr + state + n[None, :], hn, mask=ok)
            act = act_ptr + gate_rows + n[None, :]
            tl.store(act, r, mask=ok)
            tl.store(act + H, z, mask=ok)
            tl.store(act + 2 * H, new, mask=ok)
        tl.debug_barrier()  # hs[t + 1] complete before any column of step t + 1 reads it


def gru_backward(
    dy_ptr,  # [T, B, H] gradient of y, the final h's gradient added to dy[T - 1]
    w_ptr,  # [3H, H] W_hh
    keep_ptr,  # [T, B]
    hs_ptr,  # [T + 1, B, H] from the forward
    act_ptr,  # [T, B, 3H] from the forward
    hn_ptr,  # [T, B, H] from the forward
    dgh_ptr,  # [T, B, 3H] out: gradient of the recurrent gates (W_hh h + b_hh)
    dgx_ptr,  # [T, B, 3H] out: gradient of the input gates (W_ih x + b_ih)
    direct_ptr,  # [T + 1, B, H] in: direct[T] = 0; out: direct[t] = keep[t] dh_t z_t
    T,
    B,
    H,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """GRU backward in reverse time for ``BLOCK_B`` rows: the gates' gradients of every step.

    Step ``t``, column tile ``n``: ``dh = dy[t] + direct[t + 1] + keep[t + 1] * (dgh[t + 1] @
    W_hh)``; ``dn = dh (1 - z)(1 - n^2)``, ``dz = dh (keep hs[t] - n) z(1-z)``, ``dr = dn gh_n
    r(1-r)``; ``dgh[t] = [dr, dz, dn r]``, ``dgx[t] = [dr, dz, dn]``, ``direct[t] = keep[t] dh
    z``. The caller finishes ``dh0 = direct[0] + keep[0] * (dgh[0] @ W_hh)`` and the GEMMs.
    """
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    cols_n = tl.arange(0, BLOCK_N)
    cols_k = tl.arange(0, BLOCK_K)
    dtype = dy_ptr.dtype.element_ty
    G = 3 * H
    for step in range(T):
        t = T - 1 - step
        next_ok = row_ok & (tl.full((BLOCK_B,), t + 1, tl.int32) < T)  # rows with a step t + 1
        keep = tl.load(keep_ptr + t * B + rows, mask=row_ok, other=0.0)[:, None]
        keep_next = tl.load(keep_ptr + (t + 1) * B + rows, mask=next_ok, other=0.0)
        state = (t * B + rows)[:, None] * H  # into dy[t], hs[t], hn[t], direct[t]
        nxt = ((t + 1) * B + rows)[:, None] * H  # into direct[t + 1]
        gate_rows = (t * B + rows)[:, None] * G  # into act[t], dgh[t], dgx[t]
        next_gates = ((t + 1) * B + rows)[:, None] * G  # into dgh[t + 1]
        for n0 in range(0, H, BLOCK_N):
            n = n0 + cols_n
            ok = row_ok[:, None] & (n < H)[None, :]
            rec = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype)  # dgh[t + 1] @ W_hh, this tile
            for gate in tl.static_range(3):
                for k0 in range(0, H, BLOCK_K):
                    k = k0 + cols_k
                    k_ok = k < H
                    d = tl.load(
                        dgh_ptr + next_gates + gate * H + k[None, :],
                        mask=next_ok[:, None] & k_ok[None, :],
                        other=0.0,
                        cache_modifier=".cg",
                    )
                    w = tl.load(
                        w_ptr + (gate * H + k[:, None]) * H + n[None, :],
                        mask=k_ok[:, None] & (n < H)[None, :],
                        other=0.0,
                    )
                    rec = tl.dot(d, w, rec, input_precision=PRECISION)
            direct = tl.load(
                direct_ptr + nxt + n[None, :], mask=ok, other=0.0, cache_modifier=".cg"
            )
            dh = tl.load(dy_ptr + state + n[None, :], mask=ok, other=0.0)
            dh = dh + direct + keep_next[:, None] * rec
            act = act_ptr + gate_rows + n[None, :]
            r = tl.load(act, mask=ok, other=0.0)
            z = tl.load(act + H, mask=ok, other=0.0)
            new = tl.load(act + 2 * H, mask=ok, other=0.0)
            hn = tl.load(hn_ptr + state + n[None, :], mask=ok, other=0.0)
            h_prev = tl.load(hs_ptr + state + n[None, :], mask=ok, other=0.0) * keep
            dn = dh * (1.0 - z) * (1.0 - new * new)
            dz = dh * (h_prev - new) * z * (1.0 - z)
            dr = dn * hn * r * (1.0 - r)
            dgh = dgh_ptr + gate_rows + n[None, :]
            tl.store(dgh, dr, mask=ok)
            tl.store(dgh + H, dz, mask=ok)
            tl.store(dgh + 2 * H, dn * r, mask=ok)
            dgx = dgx_ptr + gate_rows + n[None, :]
            tl.store(dgx, dr, mask=ok)
            tl.store(dgx + H, dz, mask=ok)
            tl.store(dgx + 2 * H, dn, mask=ok)
            tl.store(direct_ptr + state + n[None, :], dh * z * keep, mask=ok)
        tl.debug_barrier()  # dgh[t] and direct[t] complete before step t - 1 reads them


KERNELS = {
    "lstm_forward": lstm_forward,
    "lstm_backward": lstm_backward,
    "gru_forward": gru_forward,
    "gru_backward": gru_backward,
}
_COMPILED: dict[tuple[str, bool], object] = {}


def compiled(name: str):
    """The kernel ``name`` as ``triton.jit`` makes it now: compiled, or interpreted when
    ``TRITON_INTERPRET=1`` is set at this call (decorated per mode and cached, so the variable
    can be set for some calls, e.g. by a test, without leaking into the others)."""
    interpret = interpreting()
    key = (name, interpret)
    if key not in _COMPILED:
        _COMPILED[key] = triton.jit(KERNELS[name])
    return _COMPILED[key]
