"""Typed experiment configuration, validated in one place.

An experiment is a YAML file whose keys mirror the dataclasses below (``env.id``,
``ppo.bptt_len``, ...). Each field has a docstring (the string literal under it), shown by
``recurrl keys``. :func:`load_config` reads the YAML safely, applies ``dotted.key=value``
overrides, converts and checks every value, and raises :class:`ConfigError` naming the dotted
key on the first problem.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad experiment configuration; the message names the dotted key or the file."""


@dataclass
class EnvConfig:
    id: str = "recurrl/CartPoleNoVelocity-v0"
    """Gymnasium id; ``module:Id`` imports ``module`` first (third-party registrations)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the env constructor (e.g. a difficulty knob)."""
    num_envs: int = 32
    """Number of envs stepped together."""
    normalize_obs: bool = False
    """Normalise Box observations by running mean/std (saved in checkpoints, frozen in eval)."""
    normalize_reward: bool = True
    """Scale rewards by the running std of the discounted return (episode stats stay raw)."""
    vectorization: str = "auto"
    """``auto`` (the env's native vector env if it has one, else sync), ``native``, ``sync``,
    ``async``, or ``torch`` (the env stepped as tensors on the run's device, no host round trip;
    every ``recurrl/*`` env but PendulumNoVelocity; no ``env.wrappers``)."""
    wrappers: list[dict[str, Any]] = field(default_factory=list)
    """Wrappers for each single env, in order: ``{path: "pkg.module:Class", kwargs: {...}}``."""
    skip_nonfinite: bool = False
    """Mask out steps with NaN/inf observations or rewards and reset that env (else stop)."""


@dataclass
class PolicyConfig:
    core: str = "lstm"
    """Recurrent core: ``lstm``, ``gru``, ``rnn`` (Elman, tanh), ``mingru`` (minGRU, gates from
    the input only, a parallel scan over each chunk), ``transformer`` (causal self-attention over
    the last ``context`` steps of the episode), ``tcn`` (causal dilated convolutions), or
    ``none`` (memoryless baseline, same encoder/heads). ``layer_norm`` is for ``lstm`` and
    ``gru`` only; ``learned_initial_state`` not for ``transformer`` or ``tcn``."""
    hidden_size: int | str = "auto"
    """Features of the recurrent state. ``auto``: 128, or 256 when an observation part that an
    MLP encodes has more than 128 features (a one-hot board: docs/defaults.md, round 7); the run
    records the number."""
    num_layers: int = 1
    """Stacked recurrent layers (transformer: blocks; tcn: repeats of the dilation cycle)."""
    context: int = 32
    """Steps of memory of the ``transformer`` and ``tcn`` cores (>= 1; the others ignore it):
    the transformer attends to at most this many earlier steps of the episode per layer; the
    tcn's dilations ``1, 2, ..., 2^(n-1)`` reach at least this far (``2^n - 1 >= context``)."""
    encoder_sizes: list[int] | str = "auto"
    """Hidden layer sizes of the observation MLP encoder (``[]`` feeds observations directly).
    ``auto``: ``[64]``, or ``[256]`` when an observation part that an MLP encodes has more than
    128 features; the run records the list."""
    head_sizes: list[int] = field(default_factory=list)
    """Hidden layer sizes of the MLPs between the core and the action / value heads."""
    forget_bias: float | None = 1.0
    """Initial LSTM forget-gate bias (1 keeps memory from the start); null: torch's init."""
    shared_core: bool = False
    """One core for actor and critic (True) or one each (False)."""
    activation: str = "tanh"
    """Encoder activation: ``tanh`` or ``relu``."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian head (Box actions)."""
    squash_actions: bool = False
    """Box actions: squash the Gaussian sample by tanh, rescaled to the bounds (not clipped)."""
    encoder: str = "auto"
    """``auto`` (a CNN for uint8 images), ``mlp``, or ``cnn`` (a CNN for every 2-d/3-d Box)."""
    prev_action: bool | str = "auto"
    """Feed the previous action (one-hot if discrete) into the core; zero at episode starts.
    ``auto``: when the env declares that its observations need it (POPGym's
    ``obs_requires_prev_action``: MultiarmedBandit, Battleship, Concentration, MineSweeper),
    else not; the run records what it chose."""
    prev_reward: bool = False
    """Feed the previous reward (standardised) into the core; zero at episode starts."""
    layer_norm: bool = False
    """Layer-normalised LSTM / GRU cells."""
    learned_initial_state: bool = False
    """Train the initial recurrent state (reset to it at episode starts) instead of zeros."""


# The defaults of env.num_envs, env.normalize_reward, policy.hidden_size and the ppo keys were
# picked by a sweep over memory tasks nobody tuned for (POPGym, the own suite, CartPole,
# Pendulum): docs/defaults.md.
@dataclass
class PPOConfig:
    total_steps: int = 100_000
    """Environment steps to train for (summed over envs)."""
    rollout_len: int = 64
    """Steps collected per env between updates (``T``)."""
    bptt_len: int = 64
    """Truncated-BPTT chunk length ``L``; must divide ``rollout_len``, and one longer than
    ``rollout_len`` means the whole rollout (the default: long memories need the gradient to
    reach back, docs/defaults.md)."""
    num_minibatches: int = 4
    """Minibatches per epoch; each is a set of (env, chunk) sequences (capped at the
    ``num_envs * rollout_len / bptt_len`` sequences an update has)."""
    update_epochs: int = 8
    """Passes over the rollout per update."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0 over ``total_steps``. A resumed run given another
    ``total_steps`` anneals from the rate it had at the resumed step to 0 at the new end (no jump
    back up), or from a new ``learning_rate`` if one is given; a finished run's rate is 0, so
    training it further needs a new ``learning_rate``."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO ratio clipping."""
    anneal_clip: bool = False
    """Linearly anneal ``clip_coef`` to 0 over ``total_steps`` (rl-baselines3-zoo's ``lin_0.2``):
    late updates can move the policy less and less, so a good policy is not unlearned."""
    clip_vloss: bool = False
    """Clip the value loss around the rollout-time value (same ``clip_coef``)."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    target_kl: float | None = None
    """Stop the update's epochs early once the approximate KL exceeds this (None: never)."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    refresh_states: bool = False
    """Recompute every chunk-start state with the current parameters before each epoch."""
    adam_eps: float = 1e-5
    """Adam epsilon."""


@dataclass
class RunConfig:
    dir: str | None = None
    """Run folder; default ``runs/<name>-<timestamp>``."""
    checkpoint_every: int = 50_000
    """Write ``checkpoints/latest.pt`` every this many env steps (and at the end)."""
    torch_threads: int = 1
    """``torch.set_num_threads`` (1: fastest for small recurrent policies; 0: torch's default)."""
    keep_checkpoints: int = 0
    """Also keep the last N step-stamped ``checkpoints/step-<global_step>.pt`` (0: none)."""
    precision: str = "fp32"
    """``fp32`` (full float32 products) or ``tf32`` (TF32 matrix and cell products on GPUs that
    have it: faster, about 3 fewer decimal digits; no effect on CPU)."""
    cuda_graphs: bool = True
    """On CUDA with a device-resident env (``env.vectorization: torch``), replay the acting step
    as a CUDA graph (one launch instead of ~50 per step); False: launch it eagerly."""


@dataclass
class EvalConfig:
    every: int = 0
    """Evaluate on separate envs every this many env steps (0: never); logged as ``eval_*``."""
    episodes: int = 10
    """Episodes per periodic evaluation."""
    deterministic: bool = True
    """Greedy actions (True) or sampled actions (False) for ``eval_return_mean``."""
    both_modes: bool = False
    """Also evaluate the other mode (``eval_stochastic_*`` or ``eval_deterministic_*``)."""
    seed: int = 10_000
    """Seed of the evaluation envs (the same episodes at every evaluation)."""


@dataclass
class WandbConfig:
    mode: str = "disabled"
    """``disabled``, ``offline`` (files under the run dir) or ``online``."""
    project: str = "recurrl"
    """W&B project."""
    entity: str | None = None
    """W&B entity (user or team); None: the account default."""
    group: str | None = None
    """W&B group (e.g. to group seeds)."""
    name: str | None = None
    """W&B run name; None: the experiment ``name``."""
    notes: str | None = None
    """W&B run notes."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""
    log_checkpoints: bool = False
    """Upload checkpoints (periodic, best, final) as versions of a W&B model artifact."""


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases settings."""
    tensorboard: bool = False
    """Also write TensorBoard event files to ``<run.dir>/tensorboard`` (needs ``tensorboard``)."""


@dataclass
class Config:
    name: str = "experiment"
    """Experiment name (run folder prefix, W&B run name)."""
    seed: int = 1
    """Seed for torch, numpy and the envs."""
    device: str = "auto"
    """``auto`` (cuda when available), ``cpu`` or ``cuda`` (or ``cuda:N``)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy architecture."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO and truncated-BPTT settings."""
    run: RunConfig = field(default_factory=RunConfig)
    """Run folder and checkpoints."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Periodic evaluation during training."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Experiment tracking."""

    @property
    def batch_size(self) -> int:
        """Transitions per update: ``num_envs * rollout_len``."""
        return self.env.num_envs * self.ppo.rollout_len

    @property
    def num_chunks(self) -> int:
        """TBPTT sequences per update: ``num_envs * rollout_len / bptt_len``."""
        return self.env.num_envs * (self.ppo.rollout_len // self.ppo.bptt_len)


# --- conversion -----------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number(value: Any) -> Any:
    """``"1e-3"`` -> 0.001: YAML 1.1 reads exponents without a dot as strings; others as is."""
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one YAML value against a type hint; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _from_dict(tp, value, key + ".")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        value = _number(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 in YAML
    elif tp is float:
        value = _number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            guess = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{guess[0]}?)" if guess else ""
            raise ConfigError(f"unknown key {prefix}{key}{hint}")
    values = {name: _convert(data[name], hints[name], prefix + name) for name in data}
    return cls(**values)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part} is not a mapping")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"ppo.learning_rate=1e-3"`` (or ``--ppo.learning_rate=1e-3``) -> (key, YAML value)."""
    body = text[2:] if text.startswith("--") else text
    if "=" not in body:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    key, raw = body.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(f"override {key}: {_refused_tag(error)}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {error}") from None
    return key.strip(), value


# --- validation -----------------------------------------------------------------------------

_CHOICES = {
    "env.vectorization": ("auto", "native", "sync", "async", "torch"),
    "policy.core": ("lstm", "gru", "rnn", "mingru", "transformer", "tcn", "none"),
    "policy.activation": ("tanh", "relu"),
    "policy.encoder": ("auto", "mlp", "cnn"),
    "tracking.wandb.mode": ("disabled", "offline", "online"),
    "run.precision": ("fp32", "tf32"),
}

_POSITIVE = (
    "env.num_envs",
    "policy.hidden_size",
    "policy.num_layers",
    "policy.context",
    "ppo.total_steps",
    "ppo.rollout_len",
    "ppo.bptt_len",
    "ppo.num_minibatches",
    "ppo.update_epochs",
    "ppo.learning_rate",
    "ppo.adam_eps",
    "run.checkpoint_every",
    "eval.episodes",
)


def _get(config: Config, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def validate(config: Config) -> None:
    """Check values and combinations; raise ConfigError naming the key."""
    for key, choices in _CHOICES.items():
        if _get(config, key) not in choices:
            raise ConfigError(
                f"{key}: must be one of {', '.join(choices)}, got {_get(config, key)!r}"
            )
    for key in ("policy.hidden_size", "policy.encoder_sizes"):
        if isinstance(_get(config, key), str) and _get(config, key) != "auto":
            kind = "a positive int" if key == "policy.hidden_size" else "a list of ints"
            raise ConfigError(f"{key}: expected {kind} or auto, got {_get(config, key)!r}")
    for key in _POSITIVE:
        if _get(config, key) == "auto":
            continue
        if _get(config, key) <= 0:
            raise ConfigError(f"{key}: must be > 0, got {_get(config, key)!r}")
    ppo = config.ppo
    for key in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(ppo, key) <= 1.0:
            raise ConfigError(f"ppo.{key}: must be in [0, 1], got {getattr(ppo, key)!r}")
    for key in ("clip_coef", "ent_coef", "vf_coef", "max_grad_norm"):
        if getattr(ppo, key) < 0:
            raise ConfigError(f"ppo.{key}: must be >= 0, got {getattr(ppo, key)!r}")
    if ppo.target_kl is not None and ppo.target_kl <= 0:
        raise ConfigError(f"ppo.target_kl: must be > 0 or null, got {ppo.target_kl!r}")
    # A chunk longer than the rollout is the whole rollout (so `ppo.rollout_len=32` alone works
    # with the default bptt_len of 64); more minibatches than sequences are capped in the update.
    ppo.bptt_len = min(ppo.bptt_len, ppo.rollout_len)
    if ppo.rollout_len % ppo.bptt_len != 0:
        raise ConfigError(
            f"ppo.bptt_len={ppo.bptt_len} must divide ppo.rollout_len={ppo.rollout_len} (set "
            f"both, e.g. ppo.bptt_len={ppo.rollout_len} to backpropagate through the whole rollout)"
        )
    for key in ("run.torch_threads", "run.keep_checkpoints", "eval.every"):
        if _get(config, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {_get(config, key)}")
    device = config.device
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ConfigError(f"device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    for key in ("name", "env.id"):
        if not _get(config, key).strip():
            raise ConfigError(f"{key}: must not be empty")
    if isinstance(config.policy.prev_action, str) and config.policy.prev_action != "auto":
        raise ConfigError(
            f"policy.prev_action: expected true, false or auto, got {config.policy.prev_action!r}"
        )
    if config.policy.layer_norm and config.policy.core not in ("lstm", "gru", "none"):
        raise ConfigError(
            f"policy.layer_norm: only the lstm and gru cores have layer-normalised cells, not "
            f"policy.core={config.policy.core}"
        )
    if config.policy.learned_initial_state and config.policy.core in ("transformer", "tcn"):
        raise ConfigError(
            f"policy.learned_initial_state: the {config.policy.core} core's state is a window of "
            f"past steps, which has no learned start"
        )
    _validate_wrappers(config.env.wrappers)


def _validate_wrappers(wrappers: list[dict[str, Any]]) -> None:
    """Each ``env.wrappers[i]`` is ``{path: "module:Class", kwargs: {...}}`` (kwargs optional)."""
    for i, wrapper in enumerate(wrappers):
        key = f"env.wrappers[{i}]"
        unknown = sorted(set(wrapper) - {"path", "kwargs"})
        if unknown:
            raise ConfigError(f"{key}: unknown key {unknown[0]!r} (expected path and kwargs)")
        path = wrapper.get("path")
        module, _, name = path.partition(":") if isinstance(path, str) else ("", "", "")
        if not module or not name:
            raise ConfigError(f"{key}.path: expected 'package.module:Class', got {path!r}")
        if not isinstance(wrapper.get("kwargs", {}), dict):
            raise ConfigError(f"{key}.kwargs: expected a mapping, got {wrapper['kwargs']!r}")


# --- entry points ---------------------------------------------------------------------------


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from a (possibly partial) nested dict."""
    config = _from_dict(Config, data or {})
    validate(config)
    return config


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely; errors name the file (and line for syntax errors)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        if isinstance(error, yaml.constructor.ConstructorError):
            raise ConfigError(f"{path}{where}: {_refused_tag(error)}") from None
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def _refused_tag(error: yaml.constructor.ConstructorError) -> str:
    """The message for a YAML tag that would build a Python object (safe loading refuses it)."""
    problem = getattr(error, "problem", None) or str(error)
    tag = problem.split("tag ")[-1].strip("'\"") if "tag " in problem else "?"
    tag = tag.replace("tag:yaml.org,2002:", "!!")
    return (
        f"refused YAML tag {tag}: a config holds plain data (mappings, lists, strings, "
        f"numbers, booleans, null), never Python objects"
    )


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``dotted.key=value`` of ``overrides`` in the config mapping ``data`` (in place)."""
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    return data


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read ``path`` (or defaults if None), apply ``dotted.key=value`` overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, list(overrides)))


def to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as plain data (every default filled in)."""
    return dataclasses.asdict(config)


def field_docs(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, docstring)`` for every leaf field, from the source."""
    docs = _attribute_docstrings(cls)
    hints = typing.get_type_hints(cls)
    rows = []
    default = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(field_docs(tp, prefix + f.name + "."))
        else:
            value = getattr(default, f.name)
            rows.append((prefix + f.name, _type_name(tp), value, docs.get(f.name, "")))
    return rows


def _attribute_docstrings(cls: type) -> dict[str, str]:
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value
    return docs
