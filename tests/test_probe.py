"""``recurrl probe``: memory-horizon curves with known answers, start-state drift, the CLI."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch

import recurrl.envs  # noqa: F401  (registers recurrl/TMaze-v0)
from recurrl.app.cli import main
from recurrl.app.probe import ProbeError, greedy_steps, horizon_lag, memory_horizon, probe_run
from recurrl.config import load_config
from recurrl.policy import ActorCritic

LENGTH = 3  # TMaze corridor: episodes of a few steps, the cue at each episode's first step


def tmaze_policy(core: str, hidden_size: int = 8):
    config = load_config(
        None,
        [
            "env.id=recurrl/TMaze-v0",
            f"env.kwargs.length={LENGTH}",
            f"policy.core={core}",
            f"policy.hidden_size={hidden_size}",
        ],
    )
    env = gym.make(config.env.id, length=LENGTH)
    torch.manual_seed(0)
    policy = ActorCritic(env.observation_space, env.action_space, config.policy)
    return policy, config


def curves(policy, config, lags: int = 6) -> dict:
    steps = greedy_steps(policy, config.env, episodes=8, num_envs=4, seed=0)
    return memory_horizon(policy, steps, lags)


def beyond_lag_zero(result: dict) -> list[float]:
    return [v for name in ("action", "value") for v in result[name][1:] if v is not None]


def cores(policy) -> list:
    return [core.rnn for core in (policy.actor_core, policy.critic_core) if core is not None]


def test_memoryless_core_has_no_gradient_beyond_lag_zero():
    """policy.core=none: the output at t is a function of obs[t] alone."""
    result = curves(*tmaze_policy("none"))
    assert result["action"][0] > 0 and result["value"][0] > 0
    assert beyond_lag_zero(result) and max(beyond_lag_zero(result)) == 0.0


def test_elman_rnn_with_zero_recurrent_weights_is_memoryless():
    """rnn: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh). With W_hh = 0 the h_{t-1} term
    vanishes, so h_t (and every output at t) depends on x_t only: dh_t/dx_{t-k} = 0 exactly."""
    policy, config = tmaze_policy("rnn")
    with torch.no_grad():
        for rnn in cores(policy):
            rnn.weight_hh_l0.zero_()
    result = curves(policy, config)
    assert result["action"][0] > 0
    assert max(beyond_lag_zero(result)) == 0.0


def test_lstm_with_zero_recurrent_weights_and_closed_forget_gate_is_memoryless():
    """lstm: c_t = f_t c_{t-1} + i_t g_t, h_t = o_t tanh(c_t), gates from W_ih x_t + W_hh h_{t-1}.
    W_hh = 0 alone is not enough: the cell state still carries x_{t-1} through f_t c_{t-1}.
    With the forget-gate bias at -1e4 (gate rows H:2H of torch's i, f, g, o layout) f_t =
    sigmoid(-1e4), 0 in exact float32 arithmetic, so c_t = i_t g_t and h_t depend on x_t only.
    The CPU kernels clamp exp's argument (f_t comes out near 1e-38, not 0), so what is left
    beyond lag 0 is float32's denormal floor (seen: 1e-40), against about 1e-3 at lag 0."""
    policy, config = tmaze_policy("lstm")
    H = policy.config.hidden_size
    with torch.no_grad():
        for rnn in cores(policy):
            rnn.weight_hh_l0.zero_()
            rnn.bias_ih_l0[H : 2 * H] = -1e4
            rnn.bias_hh_l0[H : 2 * H] = 0.0
    result = curves(policy, config)
    assert result["action"][0] > 0
    assert max(beyond_lag_zero(result)) < 1e-30


def test_gru_with_zero_recurrent_weights_and_shut_update_gate_is_memoryless():
    """gru (torch's r, z, n): h_t = (1 - z_t) n_t + z_t h_{t-1}, n_t = tanh(W_in x_t + b_in +
    r_t (W_hn h_{t-1} + b_hn)). W_hh = 0 makes r_t, z_t, n_t functions of x_t, but z_t h_{t-1}
    still keeps the past; z's bias at -1e4 makes z_t = sigmoid(-1e4) = 0 (up to the kernels'
    clamped exp, see the LSTM case), so h_t = n_t(x_t)."""
    policy, config = tmaze_policy("gru")
    H = policy.config.hidden_size
    with torch.no_grad():
        for rnn in cores(policy):
            rnn.weight_hh_l0.zero_()
            rnn.bias_ih_l0[H : 2 * H] = -1e4
            rnn.bias_hh_l0[H : 2 * H] = 0.0
    result = curves(policy, config)
    assert result["action"][0] > 0
    assert max(beyond_lag_zero(result)) < 1e-30


def test_untrained_lstm_remembers_something_and_lags_stay_inside_episodes():
    """The control: an untrained LSTM's gradient reaches past lag 0. Lags longer than any
    episode have no target (None), so the curve never crosses an episode start."""
    result = curves(*tmaze_policy("lstm"), lags=40)
    assert result["action"][1] > 0 and result["value"][1] > 0
    assert result["counts"][0] >= result["counts"][1] > 0
    assert result["counts"][40] == 0 and result["action"][40] is None


def test_horizon_lag():
    assert horizon_lag([1.0, 0.5, 0.005, 0.02]) == {"first_below": 2, "last_above": 3}
    assert horizon_lag([1.0, 0.0, 0.0]) == {"first_below": 1, "last_above": 0}
    assert horizon_lag([1.0, None, 0.5]) == {"first_below": None, "last_above": 2}


@pytest.fixture(scope="module")
def tmaze_run(tmp_path_factory):
    """A tiny trained TMaze LSTM run (4096 steps, about 1 s)."""
    run = tmp_path_factory.mktemp("probe") / "run"
    args = [
        "train",
        "experiments/tmaze_lstm.yaml",
        f"run.dir={run}",
        f"env.kwargs.length={LENGTH}",
        "policy.hidden_size=16",
        "ppo.total_steps=4096",
        "env.num_envs=8",
        "ppo.rollout_len=32",
        "ppo.bptt_len=8",
        "eval.every=0",
        "--quiet",
        "--eval-episodes",
        "0",
    ]
    assert main(args) == 0
    return run


def test_probe_cli_end_to_end(tmaze_run, tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", str(tmaze_run), "--epochs", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "start-state drift" in printed and "action gradient" in printed
    summary = json.loads((out / "summary.json").read_text())
    horizon = summary["horizon"]
    K = horizon["lags"][-1]
    # Default lags: the longest episode minus one, so lag K reaches from an episode's last
    # step back to its first, where the cue is shown: the trained LSTM's output depends on it.
    assert K >= LENGTH and horizon["counts"][K] > 0
    assert horizon["action"][K] > 0 and horizon["value"][K] > 0
    drift = summary["drift"]
    assert drift["same_parameters"] < 1e-5  # acting and replaying compute the same states
    assert len(drift["after_epochs"]) == 2 and all(d > 0 for d in drift["after_epochs"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "horizon.png").stat().st_size > 0 and (out / "drift.png").stat().st_size > 0


def test_probe_writes_into_the_run_folder_by_default(tmaze_run):
    summary = probe_run(tmaze_run, episodes=2, lags=3, epochs=0, num_envs=2)
    assert summary["drift"] is None and summary["horizon"]["lags"] == [0, 1, 2, 3]
    assert (tmaze_run / "probe" / "summary.json").is_file()


@pytest.mark.parametrize(
    "where, message",
    [
        ("missing", "no such checkpoint file or run directory"),
        ("", "no checkpoints/final.pt or checkpoints/latest.pt"),
    ],
)
def test_bad_run_folder_is_one_line_exit_2(tmp_path, capsys, where, message):
    assert main(["probe", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recurrl: error:") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "option, message",
    [
        (["--lags", "0"], "--lags: expected a positive integer"),
        (["--episodes", "-1"], "--episodes: expected a positive integer"),
        (["--epochs", "x"], "--epochs: expected an integer >= 0"),
    ],
)
def test_bad_options_are_one_line_exit_2(tmp_path, capsys, option, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", str(tmp_path), *option])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_probe_run_refuses_non_positive_lags(tmaze_run):
    with pytest.raises(ProbeError, match="--lags"):
        probe_run(tmaze_run, lags=0)
