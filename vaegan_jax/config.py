"""Configurations as data: named presets, `key=value` overrides, and JSON round trips."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from vaegan_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Network geometry. image_size 0 means the data's native size."""

    image_size: int = 0
    latent_dim: int = 128
    encoder_features: tuple[int, ...] = (64, 128, 256)
    encoder_dense: int = 1024
    cognitive_hidden: int = 1024
    voxel_dropout: float = 0.0
    generator_base: int = 256
    generator_features: tuple[int, ...] = (128, 64, 32)
    generator_kernel: int = 5
    discriminator_features: tuple[int, ...] = (64, 128, 256, 256)
    discriminator_strides: tuple[int, ...] = (2, 2, 2, 2)
    discriminator_dense: int = 256
    negative_slope: float = 0.0
    compute_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss weights (method.md, Larsen et al. 2016) and label smoothing.

    pixel_weight > 0 adds a pixel-space Gaussian NLL beside the feature-space one to the encoders' loss,
    and gamma * pixel_weight of it to the generator's (Larsen's VAE/GAN uses feature space alone; 0 keeps it so).
    kl_weight -1: stage I trains one variant per weight of `kl_candidates` side by side, and the run keeps
    the variant whose fMRI path's linear start cross-validates best on its fit trials (choices.py), with its
    voxel count and temperature.
    """

    kl_weight: float = 1.0 / 128
    kl_candidates: tuple[float, ...] = ()
    llike_weight: float = 1.0 / 1024
    gamma: float = 1e-6
    real_label: float = 0.75
    generator_label: float = 0.625
    latent_distill: float = 0.0
    pixel_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """One RMSProp optimiser per network. Its mean square starts at `rmsprop_initial_scale`: optax's and
    PyTorch's 0, or TensorFlow 1's 1 (with eps 1e-10), which takes small first steps instead of steps of
    about 3 x lr whatever the gradient."""

    lr_visual_encoder: float = 3e-4
    lr_cognitive_encoder: float = 3e-4
    lr_generator: float = 3e-4
    lr_discriminator: float = 3e-4
    rmsprop_decay: float = 0.9
    rmsprop_initial_scale: float = 0.0
    rmsprop_eps: float = 1e-8
    cognitive_weight_decay: float = 0.0
    lr_decay_rate: float = 0.98
    lr_decay_steps: int = 10_000


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training schedule, splits, voxel selection and bookkeeping.

    An ensemble trains members seeded seed, seed + 1, ... side by side; all share the validation split,
    which `split_seed` carves, so member k is the model a single run with seed + k would train.
    selected_voxels N > 0 feeds the cognitive encoder only the N voxels whose fit-trial responses
    correlate best with some stimulus pixel (0: every voxel; -1: the run chooses among `voxel_candidates` by
    `choice_folds`-fold cross-validation on its fit trials after stage I, see `choices.py`; only the
    `choice_shortlist` counts best at decoding temperature 0 are decoded at the others, 0: every count).
    shipped_prior: when the data set has no image-only extras (the DGMM file) and 28x28 images, stage I uses
    the shipped MNIST sixes and nines instead, every copy of the data set's stimuli removed
    (`data.handwriting`). snapshots S > 1 makes each
    seed's networks at stage I's last S snapshots, `snapshot_every` epochs apart, members of their own for
    stages II and III (a snapshot ensemble: more members for no more stage-I training; -1: the run chooses
    among `snapshot_candidates` with the voxel count). weight_average d in (0, 1): stage I keeps a moving
    average of the visual encoder's and the generator's parameters and BatchNorm statistics, decay d per step
    (the plain mean of the weights of its first 1 / (1 - d) steps), and hands those averages on to stages II
    and III (Polyak averaging; 0: the last weights). readout_mix w in [0, 1]: the ridge start of the cognitive
    encoder mixes (1 - w : w) the ridge map with the inverted linear encoding model's (`initialisation.
    encoding_readout`: the voxels' shared noise and the prior of stage I's latents, which a ridge map from 80-odd
    trials cannot learn); -1: the run chooses among `readout_mix_candidates` once the voxel count and the
    temperature are chosen. updates: how a step updates the stage's learners: "sequential", each in the stage's
    order seeing the last's result (as the code D-VAE/GAN forked does it), or "simultaneous", every learner's
    gradient from one forward pass (Larsen et al.'s Algorithm 1; about 0.7x the arithmetic of stage I).
    elastic_augment p in [0, 1]: each image of a stage-I batch is, at probability p, elastically distorted by a
    fresh random field (`augmentation.py`; 0: never).
    """

    epochs: tuple[int, int, int] = (100, 100, 20)
    batch_size: int = 5
    seed: int = 0
    ensemble: int = 1
    split_seed: int = 0
    val_trials: int = 10
    selected_voxels: int = 0
    use_extra_images: bool = True
    shipped_prior: bool = True
    eval_every: int = 5
    checkpoint_every: int = 10
    on_nan: str = "stop"
    steps_per_call: int = 0
    cognitive_init: str = "random"
    voxel_candidates: tuple[int, ...] = (150, 300, 450, 600, 1000, 0)
    choice_folds: int = 8
    choice_shortlist: int = 2
    snapshots: int = 1
    snapshot_candidates: tuple[int, ...] = (1, 2, 3)
    snapshot_every: int = 2
    weight_average: float = 0.0
    readout_mix: float = 0.0
    readout_mix_candidates: tuple[float, ...] = (0.0, 0.5)
    updates: str = "sequential"
    elastic_augment: float = 0.0


def prior_variants(config: Config, stage: int) -> tuple[float, ...]:
    """The KL weights that stage I's variants train with side by side while the run has yet to choose one
    (`loss.kl_weight` -1), each seed once per weight; () otherwise."""
    return config.loss.kl_candidates if stage == 1 and config.loss.kl_weight == -1 else ()


def member_count(config: Config, stage: int) -> int:
    """How many networks of each kind a run holds in `stage`: its seeds in stage I (each once per KL weight while
    it chooses among them), each seed's snapshots after it."""
    train = config.train
    if stage == 1:
        return train.ensemble * max(len(prior_variants(config, 1)), 1)
    return train.ensemble * max(train.snapshots, 1)


def most_snapshots(train: TrainConfig) -> int:
    """The most stage-I snapshots per seed that the run may use: when it chooses, the largest candidate that
    stage I's epochs hold (a short stage I simply offers fewer)."""
    if train.snapshots != -1:
        return train.snapshots
    return max((n for n in train.snapshot_candidates if train.epochs[0] - (n - 1) * train.snapshot_every >= 1), default=1)


def snapshot_epochs(train: TrainConfig) -> tuple[int, ...]:
    """The stage-I epochs whose networks may become members, latest first (the end of stage I is the first)."""
    return tuple(train.epochs[0] - k * train.snapshot_every for k in range(most_snapshots(train)))


def member_origins(config: Config, stage: int) -> list[dict[str, float]]:
    """Each member's seed and, when snapshots joined, the stage-I epoch it grew from (every seed at the end of
    stage I first, then every seed at each earlier snapshot), or, while stage I's variants train, its KL
    weight (every seed at the first weight first): the order of the member axis."""
    train = config.train
    seeds = [train.seed + k for k in range(train.ensemble)]
    if prior_variants(config, stage):
        return [{"seed": seed, "kl_weight": weight} for weight in prior_variants(config, stage) for seed in seeds]
    if member_count(config, stage) == train.ensemble:
        return [{"seed": seed} for seed in seeds]
    return [{"seed": seed, "stage1_epoch": epoch} for epoch in snapshot_epochs(train) for seed in seeds]


def describe_member(origin: dict[str, float]) -> str:
    """A member's origin (`member_origins`) in words: "seed 2", "seed 2, stage-I epoch 18" or "seed 2, KL weight 4"."""
    return f"seed {origin['seed']}" + (f", stage-I epoch {origin['stage1_epoch']}" if "stage1_epoch" in origin else "") + (
        f", KL weight {origin['kl_weight']:g}" if "kl_weight" in origin else "")


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How the fMRI path turns a posterior into one reconstruction.

    samples 0: G(posterior mean). samples K > 0: the mean of G(z) over K fixed draws of
    z ~ N(mu, (temperature * sigma)^2), the posterior predictive mean, which is what minimises expected
    squared error when the posterior is honest about its uncertainty. Deterministic either way. temperature
    -1: the run chooses among `temperature_candidates` with the voxel count (`TrainConfig.selected_voxels`).
    black_level b > 0: every pixel of a member's reconstruction fainter than b (pixels in [0, 1]) becomes black.
    G leaves faint grey where the stimuli are black, which SSIM's stabilising constants punish far more than
    PCC or MSE do; -1: the run chooses among `black_level_candidates` by SSIM, once voxels and temperature are
    chosen (above 0.05 the cut starts to eat the strokes' anti-aliased edges: docs/experiments.md).
    """

    samples: int = 0
    temperature: float = 1.0
    temperature_candidates: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0)
    black_level: float = 0.0
    black_level_candidates: tuple[float, ...] = (0.0, 0.02, 0.05)

    @property
    def temperature_in_use(self) -> float:
        """The temperature decoding applies: 0, the posterior mean, while the run has yet to choose one (-1)."""
        return max(self.temperature, 0.0)

    @property
    def samples_in_use(self) -> int:
        """The posterior draws decoding averages: none at temperature 0, where every draw is the mean."""
        return self.samples if self.temperature_in_use > 0 else 0

    @property
    def black_level_in_use(self) -> float:
        """The black level decoding applies: none while the run has yet to choose one (-1)."""
        return max(self.black_level, 0.0)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs besides the data."""

    preset: str = "fast"
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()


PRESETS: dict[str, Config] = {
    # The official D-VAE/GAN geometry (method.md): 100x100, latent 128, and the official code's optimiser,
    # TensorFlow 1's RMSProp; for GPUs.
    "paper": Config(
        preset="paper",
        model=ModelConfig(image_size=100),
        optim=OptimConfig(rmsprop_initial_scale=1.0, rmsprop_eps=1e-10),
        train=TrainConfig(epochs=(300, 300, 30), batch_size=5),
    ),
    # The 64x64 net of the PyTorch reimplementation this project replaces (the speed peer's geometry).
    "seed": Config(
        preset="seed",
        model=ModelConfig(
            image_size=64, encoder_dense=2048, generator_features=(256, 128, 32), generator_kernel=6,
            discriminator_features=(32, 128, 256, 256), discriminator_strides=(1, 2, 2, 2),
            discriminator_dense=512, negative_slope=0.2,
        ),
        optim=OptimConfig(lr_discriminator=3e-5),
        train=TrainConfig(epochs=(100, 100, 10), batch_size=5),
    ),
    # Native 28x28, narrower: a whole three-stage run on a 69-sized data set in minutes on 2 CPU cores.
    # A strong KL (a smoother latent space that voxels predict better; `--set loss.kl_weight=-1` has a run
    # choose it among kl_candidates, at the cost of a stage I per candidate), a pixel-space term beside the
    # feature-space one and 20 stage-I epochs (a prior the voxels predict better: docs/experiments.md), the
    # image path's weights averaged over stage I's last few hundred steps (better than its last weights or an
    # ensemble of its last epochs, at one member's cost), and a linear cognitive encoder started from the
    # ridge solution; the voxel count, the decoding temperature of the posterior predictive mean, whether that
    # start mixes in the inverted encoding model, and the black level are chosen by each run on its own fit
    # trials (choices.py). Every learner steps from one forward pass, as in Larsen et al.'s Algorithm 1: 0.7x
    # the arithmetic of updating them in turn, and no worse a prior (docs/experiments.md). Stage I distorts
    # half its images elastically: it gained in every seed on extras that are all real digits, as the real
    # 69 file's are, and changed nothing measurable on extras that hold distorted variants already.
    "fast": Config(
        preset="fast",
        model=ModelConfig(
            latent_dim=32, encoder_features=(32, 64), encoder_dense=256, cognitive_hidden=0,
            generator_base=64, generator_features=(64, 32), discriminator_features=(32, 64, 64),
            discriminator_strides=(2, 2, 1), discriminator_dense=128, negative_slope=0.2,
        ),
        loss=LossConfig(kl_weight=8.0, kl_candidates=(2.0, 4.0, 8.0), llike_weight=1.0, gamma=1e-2, pixel_weight=1.0),
        optim=OptimConfig(lr_discriminator=1e-4, lr_cognitive_encoder=3e-5),
        train=TrainConfig(epochs=(20, 10, 10), batch_size=16, cognitive_init="ridge", selected_voxels=-1,
                           weight_average=0.997, readout_mix=-1.0, updates="simultaneous", elastic_augment=0.5),
        inference=InferenceConfig(samples=32, temperature=-1.0, black_level=-1.0),
    ),
    # Seconds, for tests. One step per compiled call: programs of such small networks take longer to compile
    # than to run, and an unrolled chunk of four compiles about twice as long (66 s against 45 s a cold run).
    # Stage I distorts half its images, as `fast` does, so that the tests of repeatable, resumable and
    # ensembled runs cover the distortion's random draws.
    "tiny": Config(
        preset="tiny",
        model=ModelConfig(
            latent_dim=8, encoder_features=(8, 16), encoder_dense=32, cognitive_hidden=16,
            generator_base=16, generator_features=(16, 8), discriminator_features=(8, 16),
            discriminator_strides=(2, 2), discriminator_dense=16,
        ),
        train=TrainConfig(epochs=(2, 2, 1), batch_size=5, eval_every=1, checkpoint_every=1, val_trials=4,
                          steps_per_call=1, elastic_augment=0.5),
    ),
}


def preset(name: str) -> Config:
    """The named preset; ConfigError lists the valid names otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _coerce(text: str, annotation: Any, key: str) -> Any:
    """Parse `text` as a value of the field type `annotation`."""
    origin = typing.get_origin(annotation)
    try:
        if origin is tuple:
            item_type = typing.get_args(annotation)[0]
            parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
            return tuple(item_type(p.strip()) for p in parts)
        if annotation is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        return annotation(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--set {key}={text}: expected {_described(annotation)}") from None


def _described(annotation: Any) -> str:
    """A field type in words: "an integer", "comma-separated numbers", ..."""
    words = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "booleans"),
             str: ("text", "texts")}
    if typing.get_origin(annotation) is tuple:
        return f"comma-separated {words.get(typing.get_args(annotation)[0], ('', 'values'))[1]}"
    return words.get(annotation, (str(annotation),))[0]


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def override(config: Config, assignments: list[str]) -> Config:
    """Apply `section.field=value` assignments (e.g. `loss.gamma=0.01`) to a config."""
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set {assignment!r}: expected section.field=value, e.g. loss.gamma=0.01")
        sections = _field_types(Config)
        if section not in sections or section == "preset":
            raise ConfigError(f"--set {key}: unknown section {section!r}; sections: model, loss, optim, train, inference")
        part = getattr(config, section)
        fields = _field_types(type(part))
        if field not in fields:
            raise ConfigError(f"--set {key}: unknown field; {section} has {', '.join(fields)}")
        part = dataclasses.replace(part, **{field: _coerce(text.strip(), fields[field], key)})
        config = dataclasses.replace(config, **{section: part})
    validate(config)
    return config


# The value of a setting that the run chooses for itself (choices.py).
AUTO = -1


def needs_choice(config: Config) -> bool:
    """Whether the config leaves the voxel count, the snapshots, the temperature, the black level, the readout mix
    or the KL weight to the run (AUTO)."""
    train, inference = config.train, config.inference
    return AUTO in (train.selected_voxels, train.snapshots, inference.temperature, inference.black_level,
                    train.readout_mix, config.loss.kl_weight)


def validate(config: Config) -> None:
    """Raise ConfigError for values no run can use."""
    for section in ("model", "loss", "optim", "train", "inference"):
        for name, value in dataclasses.asdict(getattr(config, section)).items():
            # NaN passes every range check below (each comparison is False); infinity is no setting either.
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ConfigError(f"{section}.{name} must be a finite number, got {value}")
    train, model = config.train, config.model
    if len(train.epochs) != 3 or any(e < 0 for e in train.epochs):
        raise ConfigError(f"epochs must be three non-negative counts (I,II,III), got {train.epochs}")
    if train.ensemble < 1:
        raise ConfigError(f"ensemble must have at least 1 member, got {train.ensemble}")
    if train.selected_voxels < -1 or any(n < 0 for n in train.voxel_candidates):
        raise ConfigError(
            f"selected_voxels must be a count (0 keeps every voxel, -1 lets the run choose), got {train.selected_voxels}"
        )
    if train.snapshots < -1 or train.snapshots == 0 or any(n < 1 for n in train.snapshot_candidates):
        raise ConfigError(f"snapshots must be at least 1 (-1 lets the run choose), got {train.snapshots}")
    if train.choice_shortlist < 0:
        raise ConfigError(f"choice_shortlist must be a count (0: every voxel count), got {train.choice_shortlist}")
    if not 0.0 <= train.elastic_augment <= 1.0:
        raise ConfigError(f"elastic_augment must be a probability in [0, 1], got {train.elastic_augment}")
    if not 0.0 <= train.weight_average < 1.0:
        raise ConfigError(f"weight_average must be a decay in [0, 1) (0: no averaging), got {train.weight_average}")
    if train.snapshot_every < 1:
        raise ConfigError(f"snapshot_every must be at least 1, got {train.snapshot_every}")
    if train.snapshots == -1 and not train.snapshot_candidates:
        raise ConfigError("choosing snapshots (-1) needs snapshot_candidates")
    if train.snapshots > 1 and min(snapshot_epochs(train)) < 1:
        raise ConfigError(f"{train.snapshots} stage-I snapshots {train.snapshot_every} epochs apart need more "
                          f"than {train.epochs[0]} stage-I epochs")
    loss = config.loss
    if loss.kl_weight < 0 and loss.kl_weight != -1:
        raise ConfigError(f"loss.kl_weight must be non-negative (-1 lets the run choose), got {loss.kl_weight}")
    if any(w < 0 for w in loss.kl_candidates) or len(set(loss.kl_candidates)) < len(loss.kl_candidates):
        raise ConfigError(f"loss.kl_candidates must be distinct non-negative weights, got {loss.kl_candidates}")
    if loss.kl_weight == -1:
        if not loss.kl_candidates:
            raise ConfigError("choosing loss.kl_weight (-1) needs loss.kl_candidates")
        if train.epochs[0] == 0:
            raise ConfigError("choosing loss.kl_weight (-1) needs stage-I epochs; without them set it, e.g. "
                              "--set loss.kl_weight=8")
        if train.snapshots != 1:
            raise ConfigError("choosing loss.kl_weight (-1) and stage-I snapshots as members (train.snapshots) "
                              "do not combine; fix one of them")
    inference = config.inference
    auto = needs_choice(config)
    if auto and train.cognitive_init != "ridge":
        raise ConfigError("choosing selected_voxels, snapshots, the temperature, the black level, the KL weight or the "
                          "readout mix (-1) needs train.cognitive_init=ridge")
    if not (train.readout_mix == -1 or 0 <= train.readout_mix <= 1) or not all(
            0 <= w <= 1 for w in train.readout_mix_candidates):
        raise ConfigError(f"train.readout_mix and its candidates must lie in [0, 1] (-1: choose), got "
                          f"{train.readout_mix} and {train.readout_mix_candidates}")
    if train.readout_mix == -1 and not train.readout_mix_candidates:
        raise ConfigError("choosing train.readout_mix (-1) needs train.readout_mix_candidates")
    if train.readout_mix > 0 and train.cognitive_init != "ridge":
        raise ConfigError("train.readout_mix mixes the ridge start: it needs train.cognitive_init=ridge")
    if auto and (not train.voxel_candidates or not inference.temperature_candidates
                 or not inference.black_level_candidates or train.choice_folds < 2):
        raise ConfigError("choosing needs voxel, temperature and black-level candidates and at least 2 folds")
    if train.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {train.batch_size}")
    if train.on_nan not in ("stop", "rollback"):
        raise ConfigError(f"on_nan must be 'stop' or 'rollback', got {train.on_nan!r}")
    if train.cognitive_init not in ("random", "ridge"):
        raise ConfigError(f"cognitive_init must be 'random' or 'ridge', got {train.cognitive_init!r}")
    if train.updates not in ("sequential", "simultaneous"):
        raise ConfigError(f"train.updates must be 'sequential' or 'simultaneous', got {train.updates!r}")
    if train.cognitive_init == "ridge" and model.cognitive_hidden != 0:
        raise ConfigError("train.cognitive_init=ridge needs a linear cognitive encoder (model.cognitive_hidden=0)")
    if len(model.discriminator_features) != len(model.discriminator_strides):
        raise ConfigError("model.discriminator_features and model.discriminator_strides differ in length")
    if model.compute_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"compute_dtype must be float32 or bfloat16, got {model.compute_dtype!r}")
    if not 0.0 <= model.voxel_dropout < 1.0:
        raise ConfigError(f"voxel_dropout must be in [0, 1), got {model.voxel_dropout}")
    if inference.samples < 0 or inference.temperature < -1 or -1 < inference.temperature < 0:
        raise ConfigError("inference.samples must be non-negative, inference.temperature non-negative or -1 (choose)")
    if any(t < 0 for t in inference.temperature_candidates):
        raise ConfigError("inference.temperature_candidates must be non-negative")
    if not (inference.black_level == -1 or 0 <= inference.black_level < 1) or any(
            not 0 <= b < 1 for b in inference.black_level_candidates):
        raise ConfigError(f"inference.black_level must be in [0, 1) (-1 lets the run choose), and its candidates in "
                          f"[0, 1), got {inference.black_level} and {inference.black_level_candidates}")
    if train.eval_every < 1 or train.checkpoint_every < 1:
        raise ConfigError("eval_every and checkpoint_every must be at least 1")
    counts = {"train.split_seed": train.split_seed, "train.val_trials": train.val_trials,
              "train.steps_per_call": train.steps_per_call, "model.image_size": model.image_size,
              "model.cognitive_hidden": model.cognitive_hidden}
    sizes = {"model.latent_dim": model.latent_dim, "model.encoder_dense": model.encoder_dense,
             "model.generator_base": model.generator_base, "model.generator_kernel": model.generator_kernel,
             "model.discriminator_dense": model.discriminator_dense, "optim.lr_decay_steps": config.optim.lr_decay_steps,
             **{f"model.{name}": min(getattr(model, name), default=1) for name in
                ("encoder_features", "generator_features", "discriminator_features", "discriminator_strides")}}
    for name, value in counts.items():
        if value < 0:
            raise ConfigError(f"{name} must be non-negative, got {value}")
    for name, value in sizes.items():
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")


def to_dict(config: Config) -> dict[str, Any]:
    """A JSON-ready dict of the config."""
    return dataclasses.asdict(config)


# Fields earlier versions wrote, with the one value this version implies: (section, field) -> value.
_RETIRED_FIELDS = {("model", "channels"): 1}


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from `to_dict` output (JSON turns tuples into lists)."""
    sections = {}
    for name, cls in _field_types(Config).items():
        if name == "preset":
            continue
        fields = _field_types(cls)
        values = data.get(name, {})
        values = {k: v for k, v in values.items() if (name, k) not in _RETIRED_FIELDS or _RETIRED_FIELDS[name, k] != v}
        unknown = set(values) - set(fields)
        if unknown:
            raise ConfigError(f"config section {name!r} has unknown fields {sorted(unknown)}")
        sections[name] = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    return Config(preset=data.get("preset", "custom"), **sections)
