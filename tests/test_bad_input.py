"""Bad input and faults get one clear answer and an exit code, and no earlier work is lost.

Each case goes through the command line (``recurrl.app.cli.main``) where it can and asserts the
message, the exit code (2: refused before starting; 1: a run that could not go on) and that the
work already on disk survived: an earlier run folder byte for byte, or the last checkpoint and
the metrics before it. Cases already covered elsewhere are not repeated here: ``test_cli``
(a few bad values, missing file, malformed YAML), ``test_resume`` (changed env / policy / spaces
on resume, a write that dies half-way) and ``test_policy`` (pickled code, garbage files).
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import recurrl.envs  # noqa: F401  (registers the recurrl/* ids gym.make uses below)
from recurrl.algo import ppo
from recurrl.algo.make_env import make_vector_env
from recurrl.algo.rollout import Collector
from recurrl.app.cli import main
from recurrl.config import _POSITIVE, field_docs, load_config, to_dict
from recurrl.errors import DivergenceError
from recurrl.policy import ActorCritic
from recurrl.run.checkpoints import load_checkpoint, save_checkpoint
from recurrl.run.run_dir import read_metrics

# --- an env that misbehaves on cue -----------------------------------------------------------


class FaultyEnv(gym.Env):
    """Name the sign of the first observation (reward 1); 8-step episodes.

    Copy ``fault_index`` (in creation order, which is its index in a ``SyncVectorEnv``; on
    rank ``fault_rank`` only, if given) misbehaves at its ``fault_at``-th step: ``raise``s, or
    returns NaN / inf in the reward or the observation (``nan_reward``, ``inf_reward``,
    ``nan_observation``, ``inf_observation``).
    """

    created = 0  # reset before each test

    def __init__(
        self,
        fault: str = "none",
        fault_at: int = 38,
        fault_index: int = 2,
        fault_rank: int | None = None,
    ) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.fault, self.fault_at, self.fault_index = fault, fault_at, fault_index
        if fault_rank is not None and int(os.environ.get("RANK", "0")) != fault_rank:
            self.fault = "none"  # data-parallel tests: only that rank's copy misbehaves
        self.index, FaultyEnv.created = FaultyEnv.created, FaultyEnv.created + 1
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.obs = self.np_random.normal(size=2).astype(np.float32)
        return self.obs.copy(), {}

    def step(self, action):
        self.steps, self.t = self.steps + 1, self.t + 1
        reward = float(int(action) == int(self.obs[0] > 0))
        self.obs = self.np_random.normal(size=2).astype(np.float32)
        obs = self.obs.copy()
        if self.index == self.fault_index and self.steps == self.fault_at:
            if self.fault == "raise":
                raise ValueError("boom")
            kind, _, part = self.fault.partition("_")
            if part == "reward":
                reward = float(kind)
            elif part == "observation":
                obs[1] = float(kind)
        return obs, reward, self.t >= 8, False, {}


gym.register("recurrl_test/Faulty-v0", entry_point=FaultyEnv)

FAULTY = [
    "env.id=recurrl_test/Faulty-v0",
    "env.num_envs=4",
    "device=cpu",
    "ppo.total_steps=256",  # 4 updates of 64 steps; a fault comes in update 3 (rollout step 5)
    "ppo.rollout_len=16",
    "ppo.bptt_len=8",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=1",
    "policy.hidden_size=8",
    "policy.encoder_sizes=[8]",
]
QUIET = ["--quiet", "--eval-episodes=0"]


@pytest.fixture(autouse=True)
def fresh_env_counter():
    FaultyEnv.created = 0


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def earlier_run(tmp_path):
    """A run folder holding earlier work (config, metrics, a checkpoint) that must survive."""
    run_dir = tmp_path / "earlier"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: earlier\n")
    (run_dir / "metrics.jsonl").write_text('{"global_step": 64}\n{"global_step": 128}\n')
    env = gym.make("recurrl/CartPoleNoVelocity-v0")
    policy = ActorCritic(env.observation_space, env.action_space)
    save_checkpoint(run_dir / "checkpoints" / "latest.pt", policy, to_dict(load_config(None)), 128)
    return run_dir


def refused(capsys, args: list[str], message: str, code: int = 2) -> str:
    """Run the CLI; assert the exit code and a one-line error holding ``message``."""
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def train_args(*overrides: str) -> list[str]:
    return ["train", "experiments/quickstart.yaml", *overrides]


# --- config: types, ranges, unknown keys, YAML, combinations --------------------------------

WRONG_VALUE = {  # a value of the wrong type, per type name in `recurrl keys`
    "str": "5",
    "int": "many",
    "float": "fast",
    "bool": "maybe",
    "bool | str": "maybe",
    "int | str": "many",
    "list[int] | str": "{a: 1}",
    "str | None": "[1, 2]",
    "float | None": "fast",
    "list[int]": "{a: 1}",
    "list[str]": "7",
    "list[dict[str, Any]]": "7",
    "dict[str, Any]": "[1, 2]",
}
KEYS = field_docs()


@pytest.mark.parametrize(("key", "type_name"), [(k, t) for k, t, _, _ in KEYS], ids=str)
def test_every_key_refuses_a_wrong_type(key, type_name, earlier_run, capsys):
    assert type_name in WRONG_VALUE, f"add a wrong value for the type of {key}: {type_name}"
    before = snapshot(earlier_run)
    overrides = [f"run.dir={earlier_run}", f"{key}={WRONG_VALUE[type_name]}"]
    refused(capsys, train_args(*overrides), f"{key}: expected ")
    assert snapshot(earlier_run) == before


OUT_OF_RANGE = [
    *[(f"{key}=0", f"{key}: must be > 0") for key in _POSITIVE],
    ("ppo.gamma=1.5", "ppo.gamma: must be in [0, 1]"),
    ("ppo.gae_lambda=-0.1", "ppo.gae_lambda: must be in [0, 1]"),
    ("ppo.clip_coef=-1", "ppo.clip_coef: must be >= 0"),
    ("ppo.ent_coef=-0.01", "ppo.ent_coef: must be >= 0"),
    ("ppo.vf_coef=-1", "ppo.vf_coef: must be >= 0"),
    ("ppo.max_grad_norm=-1", "ppo.max_grad_norm: must be >= 0"),
    ("ppo.target_kl=0", "ppo.target_kl: must be > 0 or null"),
    ("run.torch_threads=-1", "run.torch_threads: must be >= 0"),
    ("run.keep_checkpoints=-1", "run.keep_checkpoints: must be >= 0"),
    ("eval.every=-5", "eval.every: must be >= 0"),
    ("env.vectorization=threads", "env.vectorization: must be one of auto, native, sync, async"),
    ("policy.activation=gelu", "policy.activation: must be one of tanh, relu"),
    ("policy.encoder=transformer", "policy.encoder: must be one of auto, mlp, cnn"),
    ("device=tpu", "device: must be auto, cpu, cuda or cuda:N"),
    ("env.id=", "env.id: must not be empty"),
    ("name=' '", "name: must not be empty"),
    ("ppo.learning_rate=.nan", "ppo.learning_rate: must be a finite number, got nan"),
    ("ppo.clip_coef=.inf", "ppo.clip_coef: must be a finite number, got inf"),
    ("policy.log_std_init=-.inf", "policy.log_std_init: must be a finite number, got -inf"),
    ("ppo.total_steps=1e999", "ppo.total_steps: expected int, got inf"),
    ("env.wrappers=[{path: nocolon}]", "env.wrappers[0].path: expected 'package.module:Class'"),
    ("env.wrappers=[{path: a:B, args: 1}]", "env.wrappers[0]: unknown key 'args'"),
    ("env.wrappers=[3]", "env.wrappers[0]: expected a mapping, got 3"),
    ("policy.encoder_sizes=[64, wide]", "policy.encoder_sizes[1]: expected int, got 'wide'"),
    ("ppo=3", "ppo: expected a mapping of PPOConfig keys, got 3"),
]


@pytest.mark.parametrize(("override", "message"), OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_out_of_range_and_malformed_values(override, message, earlier_run, capsys):
    before = snapshot(earlier_run)
    refused(capsys, train_args(f"run.dir={earlier_run}", override), message)
    assert snapshot(earlier_run) == before


UNKNOWN_KEYS = [
    ("pppo.learning_rate=0.1", "unknown key pppo (did you mean ppo?)"),
    ("env.num_env=2", "unknown key env.num_env (did you mean env.num_envs?)"),
    ("tracking.wandb.projet=x", "unknown key tracking.wandb.projet (did you mean "),
    ("policy.hiden_size=8", "unknown key policy.hiden_size (did you mean policy.hidden_size?)"),
    ("zzz_nothing_like_it=1", "unknown key zzz_nothing_like_it"),
]


@pytest.mark.parametrize(("override", "message"), UNKNOWN_KEYS, ids=[o for o, _ in UNKNOWN_KEYS])
def test_unknown_keys_suggest_the_closest(override, message, earlier_run, capsys):
    before = snapshot(earlier_run)
    refused(capsys, train_args(f"run.dir={earlier_run}", override), message)
    assert snapshot(earlier_run) == before


def test_unknown_key_in_a_file_names_it(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("name: typo\nppo:\n  bptt_lenght: 8\n")
    refused(
        capsys, ["train", str(config)], "unknown key ppo.bptt_lenght (did you mean ppo.bptt_len?)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping of config keys at the top level"),
        ("name: x\n\tseed: 2\n", "line 2: malformed YAML"),
        ("ppo: {rollout_len: 32\n", "malformed YAML"),
    ],
    ids=["top-level-list", "tab", "unclosed-brace"],
)
def test_malformed_files(text, message, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    err = refused(capsys, ["train", str(config)], message)
    assert str(config) in err


def test_python_tags_are_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    config = tmp_path / "evil.yaml"
    config.write_text(f'name: x\nseed: !!python/object/apply:os.system ["touch {marker}"]\n')
    refused(capsys, ["train", str(config)], f"{config} line 2: refused YAML tag !!python/object")
    override = f"seed=!!python/object/apply:pathlib.Path.touch [{marker}]"
    refused(capsys, train_args(override), "override seed: refused YAML tag !!python/object")
    object_tag = "name=!!python/object:recurrl.config.Config {}"
    refused(capsys, train_args(object_tag), "refused YAML tag !!python/object:recurrl.config")
    assert not marker.exists()


def test_incompatible_combinations(earlier_run, tmp_path, capsys):
    before = snapshot(earlier_run)
    flicker = "env.wrappers=[{path: 'recurrl.envs.wrappers:Flicker', kwargs: {p: 0.1}}]"
    cases = [
        (["env.id=recurrl_test/Faulty-v0", "env.vectorization=native"], "has no native"),
        (
            ["env.id=CartPole-v1", "env.vectorization=native", flicker],
            "env.wrappers: a native vector env has no single envs to wrap",
        ),
        (["env.wrappers=[{path: 'recurrl.envs.wrappers:NoSuch'}]"], "has no attribute 'NoSuch'"),
    ]
    for overrides, message in cases:
        refused(capsys, train_args(f"run.dir={earlier_run}", *overrides), message)
    if not torch.cuda.is_available():
        refused(capsys, train_args(f"run.dir={earlier_run}", "device=cuda"), "CUDA is not avail")
    refused(
        capsys,
        ["train", "experiments/quickstart.yaml", "--resume", str(earlier_run)],
        "--resume takes the config from the checkpoint",
    )
    assert snapshot(earlier_run) == before


def test_a_new_run_never_overwrites_one_with_checkpoints(earlier_run, capsys):
    before = snapshot(earlier_run)
    err = refused(capsys, train_args(f"run.dir={earlier_run}"), "already holds a run")
    assert f"recurrl train --resume {earlier_run}" in err
    assert snapshot(earlier_run) == before


# --- env: unknown id, broken module, errors and NaN mid-rollout -----------------------------


@pytest.mark.parametrize("vectorization", ["auto", "torch"])
def test_env_kwargs_the_env_refuses_are_one_line(vectorization, tmp_path, capsys):
    overrides = ["env.id=recurrl/TMaze-v0", "env.kwargs.length=-1"]
    args = train_args(f"run.dir={tmp_path}/r", f"env.vectorization={vectorization}", *overrides)
    message = "env.kwargs: recurrl/TMaze-v0 rejected its arguments: TMaze: length must be >= 1"
    refused(capsys, args, message)
    assert not (tmp_path / "r").exists()


def test_unknown_env_id_suggests_the_closest(capsys, tmp_path):
    err = refused(capsys, train_args(f"run.dir={tmp_path}/r", "env.id=CartPol-v1"), "unknown env")
    assert "(did you mean CartPole-v1?)" in err
    assert not (tmp_path / "r").exists()


def test_a_module_that_fails_to_import_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_registration.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = "env.id: cannot import module 'broken_registration': RuntimeError: broken on purpose"
    refused(capsys, train_args(f"run.dir={tmp_path}/r", "env.id=broken_registration:X-v0"), message)
    wrapper = "env.wrappers=[{path: 'broken_registration:Wrapper'}]"
    refused(capsys, train_args(f"run.dir={tmp_path}/r", wrapper), "env.wrappers[0]: cannot import")
    assert not (tmp_path / "r").exists()


def failed_run(capsys, run_dir, *overrides) -> str:
    """Run the faulty env; assert exit code 1 and return stderr's last line."""
    assert main(["train", *FAULTY, f"run.dir={run_dir}", *overrides, *QUIET]) == 1
    err = capsys.readouterr().err
    return err.strip().splitlines()[-1]


def test_env_that_raises_is_named_and_a_checkpoint_comes_first(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *FAULTY, f"run.dir={run_dir}", "env.kwargs={fault: raise}", *QUIET]) == 1
    err = capsys.readouterr().err
    assert "ValueError: boom" in err.split("recurrl: error:")[0]  # the env's own traceback first
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        "recurrl: error: env recurrl_test/Faulty-v0 raised ValueError: boom while stepping at "
        "rollout step 5 after global step 128 (env index 2); saved "
    ), line
    assert f"resume with: recurrl train --resume {run_dir}" in line
    # The last completed update (2 of 4) is saved; nothing after it, nothing lost before it.
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["global_step"] == 128
    assert [m["global_step"] for m in read_metrics(run_dir)] == [64, 128]
    # The resumed run's envs are new copies (indices 4..7), none of which fails.
    assert main(["train", "--resume", str(run_dir), *QUIET]) == 0
    assert [m["global_step"] for m in read_metrics(run_dir)] == [64, 128, 192, 256]


class RaisingVectorEnv(gym.vector.VectorEnv):
    """A natively batched env that raises on its 3rd step (no single copy to blame)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 2) -> None:
        self.num_envs, self.steps = num_envs, 0
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed=None, options=None):
        return np.zeros((self.num_envs, 2), np.float32), {}

    def step(self, actions):
        self.steps += 1
        if self.steps == 3:
            raise RuntimeError("device lost")
        zeros = np.zeros(self.num_envs, dtype=bool)
        return np.zeros((self.num_envs, 2), np.float32), np.zeros(self.num_envs), zeros, zeros, {}


gym.register("recurrl_test/RaisingVector-v0", vector_entry_point=RaisingVectorEnv)


def test_batched_env_error_says_the_index_is_unknown(tmp_path, capsys):
    overrides = [*FAULTY, f"run.dir={tmp_path}", "env.id=recurrl_test/RaisingVector-v0"]
    overrides += ["env.num_envs=2"]
    assert main(["train", *overrides, *QUIET]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "raised RuntimeError: device lost while stepping at rollout step 2 after global " in line
    assert "(env index unknown (stepped as a batch))" in line
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["global_step"] == 0


@pytest.mark.parametrize(
    ("fault", "what"),
    [
        ("nan_reward", "nan in reward of env index 2"),
        ("inf_reward", "inf in reward of env index 2"),
        ("nan_observation", "nan in observation of env index 2"),
        ("-inf_observation", "inf in observation of env index 2"),
    ],
)
def test_nonfinite_env_output_is_refused_with_where(fault, what, tmp_path, capsys):
    line = failed_run(capsys, tmp_path / "run", f"env.kwargs={{fault: '{fault}'}}")
    assert f"env recurrl_test/Faulty-v0 returned {what} at rollout step 5 after global " in line
    assert "set env.skip_nonfinite=true" in line and "saved " in line
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["global_step"] == 128


def test_skip_nonfinite_masks_the_step_cuts_the_episode_and_resets_the_env():
    config = load_config(None, FAULTY + ["env.kwargs={fault: nan_observation, fault_at: 5}"])
    envs = make_vector_env(config.env)
    policy = ActorCritic(envs.single_observation_space, envs.single_action_space, config.policy)
    collector = Collector(envs, policy, 8, 4, seed=0, skip_nonfinite=True)
    rollout = collector.collect()  # copy 2's 5th step (t = 4) returns a NaN observation
    assert rollout.nonfinite_steps == 1
    assert rollout.valid[:, 2].tolist() == [1, 1, 1, 1, 0, 1, 1, 1]
    assert rollout.rewards[4, 2] == 0.0
    assert rollout.truncated[3, 2] == 1.0  # the episode ends before the bad step ...
    assert rollout.next_values[3, 2] == rollout.values[4, 2]  # ... bootstrapped from its value
    assert rollout.episode_start[5, 2] == 1.0  # the env was reset: a new episode follows
    assert torch.isfinite(rollout.obs).all() and torch.isfinite(rollout.rewards).all()
    assert rollout.valid[:, [0, 1, 3]].all()  # other copies untouched
    envs.close()


def test_skip_nonfinite_trains_through_and_counts(tmp_path):
    args = ["train", *FAULTY, f"run.dir={tmp_path}", "env.kwargs={fault: nan_reward}"]
    assert main([*args, "env.skip_nonfinite=true", *QUIET]) == 0
    metrics = read_metrics(tmp_path)
    assert [m["nonfinite_steps"] for m in metrics] == [0, 0, 1, 0]
    assert all(m["episodic_return"] == m["episodic_return"] for m in metrics)  # never NaN
    final = load_checkpoint(tmp_path / "checkpoints" / "final.pt")["policy"]
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())


# --- training: a diverged update ------------------------------------------------------------


def test_divergence_keeps_the_last_good_parameters(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", *FAULTY, f"run.dir={run_dir}", "ppo.total_steps=128", *QUIET]
    assert main(args) == 0
    good = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    capsys.readouterr()
    resume = ["train", "--resume", str(run_dir), "ppo.total_steps=256", "ppo.learning_rate=1e30"]
    assert main([*resume, *QUIET]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"recurrl: error: training diverged: the loss became (inf|nan) \(", line)
    assert "value_loss=" in line and "of update 3 (after step 128)" in line
    assert "the parameters from before that update were restored" in line
    assert "lower ppo.learning_rate (now 1e+30)" in line
    latest = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert latest["global_step"] == 128
    for key, value in good["policy"].items():
        assert torch.equal(latest["policy"][key], value), key  # the last good parameters
    assert [m["global_step"] for m in read_metrics(run_dir)] == [64, 128]
    again = ["train", "--resume", str(run_dir), "ppo.learning_rate=0.001", "ppo.total_steps=256"]
    assert main([*again, *QUIET]) == 0


def test_nonfinite_gradient_is_refused_before_the_step():
    torch.manual_seed(0)
    layer = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    loss = layer(torch.ones(3, 2)).sum()
    loss.backward()
    layer.weight.grad[0, 0] = float("inf")
    before = [p.detach().clone() for p in layer.parameters()]
    terms = ppo.LossTerms(*(torch.tensor(0.5) for _ in ppo.LossTerms._fields))
    with pytest.raises(DivergenceError, match="the gradient norm became inf .* in minibatch 1"):
        ppo.optimizer_step(layer, optimizer, loss, terms, 0.5, where="minibatch 1")
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))


# --- files: run folder, full disk, damaged and foreign checkpoints --------------------------


def test_unwritable_run_dir(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refused(capsys, train_args(f"run.dir={blocker}/run"), f"run.dir: cannot write to {blocker}/run")
    assert blocker.read_text() == "not a folder"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        refused(capsys, train_args(f"run.dir={locked}/run"), "Permission denied")


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    real_save, writes = torch.save, []

    def save(payload, path, *args, **kwargs):
        writes.append(path)
        if len(writes) == 2:  # the second checkpoint: the disk is full
            with open(path, "wb") as file:
                file.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(payload, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    args = ["train", *FAULTY, f"run.dir={run_dir}", "run.checkpoint_every=64", *QUIET]
    assert main(args) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    latest = run_dir / "checkpoints" / "latest.pt"
    assert line == (
        f"recurrl: error: could not write checkpoint {latest}: No space left on device; the "
        f"previous latest.pt is intact (it holds global step 64); free some space, then resume "
        f"with: recurrl train --resume {run_dir}"
    )
    monkeypatch.undo()
    assert load_checkpoint(latest)["global_step"] == 64
    assert sorted(p.name for p in latest.parent.iterdir()) == ["latest.pt"]  # no partial file
    assert main(["train", "--resume", str(run_dir), *QUIET]) == 0
    assert [m["global_step"] for m in read_metrics(run_dir)] == [64, 128, 192, 256]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    args = ["train", *FAULTY, f"run.dir={run_dir}", "ppo.total_steps=128"]
    assert main([*args, "run.checkpoint_every=64", "run.keep_checkpoints=1", *QUIET]) == 0
    return run_dir


def damage(run_dir: pathlib.Path, tmp_path: pathlib.Path, how: str) -> pathlib.Path:
    """A copy of ``run_dir`` whose ``latest.pt`` is damaged as ``how`` says."""
    copy = tmp_path / "copy"
    for name, data in snapshot(run_dir).items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    latest = copy / "checkpoints" / "latest.pt"
    data = latest.read_bytes()
    if how == "truncated":
        latest.write_bytes(data[: len(data) // 3])
    elif how == "corrupted":  # the zip's directory at the end scrambled
        latest.write_bytes(data[:-64] + bytes(b ^ 0xFF for b in data[-64:]))
    elif how == "empty":
        latest.write_bytes(b"")
    elif how == "other-version":
        payload = load_checkpoint(latest)
        torch.save({**payload, "format_version": 99}, latest)
    elif how == "not-recurrl":
        torch.save({"weights": torch.zeros(3)}, latest)
    elif how == "pickled-code":
        marker = copy / "marker"

        class Payload:
            def __reduce__(self):
                return (pathlib.Path.touch, (marker,))

        torch.save({"format": "recurrl-checkpoint", "evil": Payload()}, latest)
    return copy


DAMAGE = [
    ("truncated", "cannot read checkpoint"),
    ("corrupted", "cannot read checkpoint"),
    ("empty", "cannot read checkpoint"),
    ("other-version", "checkpoint format version 99 is not supported by recurrl"),
    ("not-recurrl", "not a recurrl checkpoint"),
    ("pickled-code", "refused: it holds objects other than tensors and plain data"),
]


@pytest.mark.parametrize(("how", "message"), DAMAGE, ids=[h for h, _ in DAMAGE])
def test_damaged_or_foreign_checkpoint_is_refused_and_nothing_changes(
    how, message, finished_run, tmp_path, capsys
):
    run_dir = damage(finished_run, tmp_path, how)
    before = snapshot(run_dir)
    latest = run_dir / "checkpoints" / "latest.pt"
    err = refused(capsys, ["train", "--resume", str(run_dir), "ppo.total_steps=256"], message)
    assert str(latest) in err
    assert "other checkpoints in" in err and "final.pt" in err  # where to go instead
    refused(capsys, ["eval", str(latest)], message)
    assert snapshot(run_dir) == before  # metrics.jsonl not cut back, nothing rewritten
    assert not (run_dir / "marker").exists()


# --- process: killed outright ----------------------------------------------------------------


def test_sigkill_then_resume_continues_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "recurrl", "train", *FAULTY, f"run.dir={run_dir}"]
    command += ["env.id=tests.test_bad_input:recurrl_test/Faulty-v0"]  # import registers it
    command += ["ppo.total_steps=100000000", "run.checkpoint_every=64", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest, deadline = run_dir / "checkpoints" / "latest.pt", time.monotonic() + 120
    while len(read_metrics(run_dir)) < 3 or not latest.is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    step = load_checkpoint(latest)["global_step"]
    assert step >= 128
    target = step + 128
    assert main(["train", "--resume", str(run_dir), f"ppo.total_steps={target}", *QUIET]) == 0
    steps = [m["global_step"] for m in read_metrics(run_dir)]
    assert steps == list(range(64, target + 1, 64))  # no gap, no duplicate
    assert load_checkpoint(run_dir / "checkpoints" / "final.pt")["global_step"] == target


def test_run_precision_is_checked_and_restored_after_training(tmp_path):
    import torch

    from recurrl.config import ConfigError, load_config
    from recurrl.run.train import matmul_precision

    with pytest.raises(ConfigError, match="run.precision: must be one of fp32, tf32, got 'bf16'"):
        load_config(None, ["run.precision=bf16"])
    before = torch.backends.cudnn.allow_tf32
    with matmul_precision("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with matmul_precision("fp32"):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.allow_tf32 == before
