"""``recurrl probe``: memory-horizon curves and the state probe with known answers, start-state
drift, the CLI."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch

import recurrl.envs  # noqa: F401  (registers recurrl/TMaze-v0)
from recurrl.app.cli import main
from recurrl.app.probe import (
    ProbeError,
    age_buckets,
    format_summary,
    greedy_steps,
    horizon_lag,
    memory_horizon,
    probe_memory,
    probe_run,
    state_probe,
)
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


# --- state probe -------------------------------------------------------------------------------


def test_age_buckets_are_exact_then_double():
    assert age_buckets(3, exact=4) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert age_buckets(9, exact=4)[3:] == [(3, 3), (4, 7), (8, 15)]
    assert age_buckets(0) == [(0, 0)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_state_probe_reads_a_copied_target_and_nothing_from_noise(seed):
    """Synthetic samples: 3 classes; at ages 0-2 the features hold the target's one-hot (plus
    noise), at ages 3-5 noise only. Held out, the first decode at 100%, the others at chance
    (3 classes, about 100 held-out samples per age: a standard error near 0.05)."""
    generator = torch.Generator().manual_seed(seed)
    episodes, ages, classes = 300, 6, 3
    targets = torch.randint(classes, (episodes,), generator=generator).repeat_interleave(ages)
    age = torch.arange(ages).repeat(episodes)
    noise = torch.randn(episodes * ages, 8, generator=generator)
    copied = torch.nn.functional.one_hot(targets, 8).float() * (age < 3).unsqueeze(1)
    result = state_probe(
        copied + 0.1 * noise, targets, age, torch.arange(episodes).repeat_interleave(ages), seed
    )
    assert result["ages"] == result["age_max"] == list(range(ages))
    assert result["samples"] == [episodes] * ages
    assert (result["train_episodes"], result["test_episodes"]) == (200, 100)
    assert min(result["accuracy"][:3]) == 1.0
    for accuracy, chance in zip(result["accuracy"][3:], result["chance"][3:], strict=True):
        assert 0.25 < chance < 0.45 and abs(accuracy - chance) < 0.15


def test_state_probe_splits_by_episode():
    """Every sample of an episode is on one side: features that only identify the episode
    (a one-hot of its id) say nothing about a held-out episode's random target."""
    generator = torch.Generator().manual_seed(0)
    episodes, steps = 60, 5
    episode = torch.arange(episodes).repeat_interleave(steps)
    targets = torch.randint(2, (episodes,), generator=generator).repeat_interleave(steps)
    features = torch.nn.functional.one_hot(episode).float()
    result = state_probe(features, targets, torch.zeros_like(episode), episode)
    # Split by step, the training side would hold every test episode's id and its target.
    assert result["accuracy"][0] == result["chance"][0]


def memory_policy(core: str, carries: str):
    """A TMaze policy whose actions ignore everything (the actor head zeroed: logits 0, always
    forward), so every episode walks the same path whatever its cue, and whose cores either
    keep the cue (``carries="cue"``: lstm with W_hh = 0 and the forget gate open, f = 1: c_t is
    c_0 plus terms that depend on the identical later inputs only, so c_t(up) - c_t(down) =
    c_0(up) - c_0(down), nonzero) or read nothing (``"nothing"``: W_ih = W_hh = 0, the state is
    the same function of time in every episode)."""
    policy, config = tmaze_policy(core)
    H = policy.config.hidden_size
    with torch.no_grad():
        policy.head.linear.weight.zero_()
        policy.head.linear.bias.zero_()
        for rnn in cores(policy):
            rnn.weight_hh_l0.zero_()
            if carries == "cue":
                rnn.bias_ih_l0[H : 2 * H] = 1e4  # sigmoid(1e4) == 1 in float32
                rnn.bias_hh_l0[H : 2 * H] = 0.0
            else:
                rnn.weight_ih_l0.zero_()
    return policy, config


@pytest.mark.parametrize(
    "core, carries", [("lstm", "cue"), ("lstm", "nothing"), ("none", "observation")]
)
def test_state_probe_known_answers(core, carries):
    """A state that keeps the cue decodes at 100% at every age; a state that reads nothing
    decodes at chance (exactly: constant features predict the training majority, which is what
    chance scores); the memoryless core knows the cue only while it is shown (age 0)."""
    policy, config = memory_policy(core, carries) if core == "lstm" else tmaze_policy(core)
    if core == "none":
        with torch.no_grad():
            policy.head.linear.weight.zero_()
            policy.head.linear.bias.zero_()
    result = probe_memory(policy, config.env, episodes=48, num_envs=8, seed=0)
    horizon = 2 * (LENGTH + 1)  # TMaze's time budget: always forward, never turning
    assert result["ages"] == list(range(horizon))
    assert result["samples"] == [48] * horizon
    assert all(0.2 < c < 0.8 for c in result["chance"])
    accuracy, chance = result["accuracy"], result["chance"]
    if carries == "cue":
        assert "lstm recurrent state h, c" in result["features"]
        assert result["feature_size"] == 4 * policy.config.hidden_size  # h, c of two cores
        assert accuracy == [1.0] * horizon
    elif carries == "nothing":
        assert max(abs(a - c) for a, c in zip(accuracy, chance, strict=True)) < 0.05
    else:
        assert "memoryless core's output" in result["features"]
        assert accuracy[0] == 1.0
        assert max(abs(a - c) for a, c in zip(accuracy[1:], chance[1:], strict=True)) < 0.05


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
    memory = summary["state_probe"]
    assert "state probe: linear decoding of memory_target" in printed
    assert memory["ages"][:2] == [0, 1] and memory["test_episodes"] > 0
    assert len(memory["ages"]) == len(memory["accuracy"]) == len(memory["chance"])
    assert all(0 <= a <= 1 for a in memory["accuracy"]) and sum(memory["samples"]) > 0
    assert memory["accuracy"][0] == 1.0  # the cue is in the observation just read
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for image in ("horizon.png", "drift.png", "state_probe.png"):
        assert (out / image).stat().st_size > 0


def test_probe_writes_into_the_run_folder_by_default(tmaze_run):
    summary = probe_run(tmaze_run, episodes=2, lags=3, epochs=0, num_envs=2, state_episodes=0)
    assert summary["drift"] is None and summary["horizon"]["lags"] == [0, 1, 2, 3]
    assert summary["state_probe"] == {"skipped": "--state-episodes 0"}
    assert (tmaze_run / "probe" / "summary.json").is_file()


def test_state_probe_skips_an_env_without_memory_target(tmaze_run, tmp_path, monkeypatch):
    from recurrl.envs.core import Task
    from recurrl.envs.tmaze import TMaze

    monkeypatch.setattr(TMaze, "memory", Task.memory)  # TMaze as an env without the entry
    summary = probe_run(tmaze_run, episodes=2, lags=2, epochs=0, out=tmp_path, num_envs=2)
    reason = "recurrl/TMaze-v0 puts no memory_target in its info"
    assert summary["state_probe"] == {"skipped": reason}
    assert f"state probe: skipped ({reason})" in format_summary(summary).splitlines()


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
