"""recurrl installs and imports beside a user's project: the top-level ``envs/`` folder is
``recurrl.envs``, never a module named ``envs``; low-level imports register nothing; a user's
``module:Id`` is found in the current folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECURRL = Path(sys.executable).with_name("recurrl")


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "WANDB_MODE": "disabled"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def tiny_run(project: Path) -> list[str]:
    """Overrides for a 64-step training run into ``project/run``."""
    return [
        "env.num_envs=2",
        "ppo.rollout_len=16",
        "ppo.bptt_len=8",
        "ppo.total_steps=64",
        f"run.dir={project / 'run'}",
        "--quiet",
    ]


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A user's project with its own ``envs`` package, first on ``sys.path``."""
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("USER_ENVS = True\n")
    (tmp_path / "myenv.py").write_text(
        textwrap.dedent(
            """
            import gymnasium as gym
            from gymnasium.envs.registration import register

            class Blink(gym.Env):
                observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
                action_space = gym.spaces.Discrete(2)

                def reset(self, *, seed=None, options=None):
                    super().reset(seed=seed)
                    self.t = 0
                    return self.observation_space.sample() * 0, {}

                def step(self, action):
                    self.t += 1
                    obs = self.observation_space.sample() * 0
                    return obs, float(action), self.t >= 8, False, {}

            register(id="Blink-v0", entry_point=Blink)
            """
        )
    )
    return tmp_path


def test_import_and_make_beside_a_user_envs_package(user_project: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        import envs
        assert envs.USER_ENVS, "the user's own envs package"
        import recurrl
        import recurrl.envs
        assert sys.modules["envs"].USER_ENVS, "recurrl replaced the user's envs"
        import gymnasium as gym
        env = gym.make("recurrl/TMaze-v0")
        env.reset(seed=0)
        vec = gym.make_vec("recurrl/CartPoleNoVelocity-v0", num_envs=2,
                           vectorization_mode="vector_entry_point")
        vec.reset(seed=0)
        print("ok", recurrl.envs.__name__, type(env.unwrapped).__module__)
        """
    )
    result = run([sys.executable, "-c", code], user_project)
    assert result.returncode == 0, result.stderr
    assert "ok recurrl.envs recurrl.envs.tmaze" in result.stdout


def test_make_by_module_prefixed_id_without_importing_recurrl(user_project: Path) -> None:
    code = "import gymnasium as gym; gym.make('recurrl.envs:recurrl/CueRecall-v0'); print('ok')"
    result = run([sys.executable, "-c", code], user_project)
    assert result.returncode == 0, result.stderr


def test_cli_envs_and_train_beside_a_user_envs_package(user_project: Path) -> None:
    listed = run([str(RECURRL), "envs"], user_project)
    assert listed.returncode == 0, listed.stderr
    assert "recurrl/TMaze-v0" in listed.stdout
    trained = run(
        [
            sys.executable,
            "-m",
            "recurrl",
            "train",
            "env.id=recurrl/TMaze-v0",
            *tiny_run(user_project),
        ],
        user_project,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    assert (user_project / "run" / "checkpoints" / "final.pt").is_file()


def test_env_id_module_is_found_in_the_current_folder(user_project: Path) -> None:
    """``env.id: myenv:Blink-v0`` from the console script, with no ``PYTHONPATH`` set."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["WANDB_MODE"] = "disabled"
    result = subprocess.run(
        [
            str(RECURRL),
            "train",
            "env.id=myenv:Blink-v0",
            *tiny_run(user_project),
        ],
        cwd=user_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (user_project / "run" / "checkpoints" / "final.pt").is_file()


def test_low_level_imports_register_nothing() -> None:
    code = textwrap.dedent(
        """
        import sys
        import recurrl, recurrl.nn
        assert "gymnasium" not in sys.modules, "recurrl.nn imported gymnasium"
        import recurrl.policy
        assert "recurrl.envs" not in sys.modules, "recurrl.policy registered envs"
        import gymnasium as gym
        assert not any(i.startswith("recurrl/") for i in gym.registry), "ids registered"
        print("ok")
        """
    )
    result = run([sys.executable, "-c", code], ROOT)
    assert result.returncode == 0, result.stderr


def test_wheel_installs_envs_as_recurrl_envs(tmp_path: Path) -> None:
    """The built wheel holds every module under ``recurrl/`` and no top-level ``envs``."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("recurrl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not any(name.startswith("envs/") for name in names)
    expected = {f"recurrl/envs/{p.name}" for p in (ROOT / "envs").glob("*.py")}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "recurrl").rglob("*.py")}
    assert expected <= names, sorted(expected - names)
    assert "recurrl/nn/native/kernels.c" in names
