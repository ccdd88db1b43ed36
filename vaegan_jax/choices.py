"""Settings a run chooses for itself on its own fit trials: stage I's KL weight, the voxel count, the stage-I
snapshots that become members, the decoding temperature, the readout mix and the black level.

Which voxels carry the stimulus, how far to trust the fMRI posterior, and whether averaging the networks of
several stage-I epochs pays, differ between data sets; a default tuned on one is a guess on the next. After
stage I, before stage II, the run cross-validates the fMRI path's linear start over its fit trials (never
the validation or test trials): in each of K folds, on the other folds only, it z-scores the voxels,
selects voxels and fits the ridge-initialised cognitive encoder onto each snapshot's trained visual latent,
then decodes the held-out fold with that snapshot's generator at every candidate temperature; a candidate
with S snapshots averages the decodes of the latest S. Scores pool the out-of-fold reconstructions of all
fit trials; the candidate with the highest pooled PCC wins (the measure that also picks the best checkpoint).
At the winner's voxels and temperature, readouts that mix the ridge map with the inverted encoding model
(initialisation.encoding_readout) are decoded the same way, and the mix with the highest PCC wins.
Then the winning reconstructions are cleared below each candidate black level (config.InferenceConfig), and
the level with the highest SSIM wins: G's faint grey in a black background costs SSIM much and PCC hardly at all.

The KL weight shapes the latent space the voxels must predict, so it is chosen by the same measure: stage I
trains one variant per candidate weight side by side, and the variant whose best candidate above scores
highest goes on to stages II and III with that candidate's voxels and temperature. Only at stage I's end:
after 8 of its 20 epochs the variants' order was the reverse of their order at the end (docs/experiments.md).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vaegan_jax import initialisation, metrics, rng
from vaegan_jax.config import AUTO, Config, most_snapshots, snapshot_epochs
from vaegan_jax.data.dataset import VoxelScaler
from vaegan_jax.data.prepare import clear_faint_pixels, select_voxels, selection_size, to_model_images, to_native_images
from vaegan_jax.reconstruction import SUMMARY_METRICS
from vaegan_jax.steps import States, make_decode

FOLD_SEED = 0


@dataclasses.dataclass(frozen=True)
class Choice:
    """The chosen voxel count (0: every voxel), snapshots per seed, temperature, black level and readout mix, with
    the cross-validated figures of every candidate of each."""

    selected_voxels: int
    snapshots: int
    snapshot_epochs: tuple[int, ...]
    temperature: float
    folds: int
    candidates: list[dict[str, Any]]
    black_level: float = 0.0
    black_levels: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    readout_mix: float = 0.0
    readout_mixes: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The choice and its evidence, as choices.json holds them."""
        return {
            "chosen": {"train.selected_voxels": self.selected_voxels, "train.snapshots": self.snapshots,
                       "inference.temperature": self.temperature, "inference.black_level": self.black_level,
                       "train.readout_mix": self.readout_mix},
            "stage1_epochs": list(self.snapshot_epochs),
            "criterion": "pcc", "folds": self.folds, "trials": "fit", "candidates": self.candidates,
            "readout_mix": {"criterion": "pcc", "candidates": self.readout_mixes},
            "black_level": {"criterion": "ssim", "candidates": self.black_levels},
        }

    def describe(self) -> str:
        """One line for the run's log."""
        best = max(self.candidates, key=lambda row: row["pcc"])
        voxels = "every voxel" if self.selected_voxels == 0 else f"{self.selected_voxels} voxels"
        epochs = ", ".join(map(str, self.snapshot_epochs))
        snapshots = f"the networks of stage-I epochs {epochs}, " if self.snapshots > 1 else ""
        black = f", black level {self.black_level:g} (SSIM {self._black_row()['ssim']:.4f})" if self.black_levels else ""
        mix = ""
        if self.readout_mixes:
            kept = next(row for row in self.readout_mixes if row["readout_mix"] == self.readout_mix)
            mix = f", readout mix {self.readout_mix:g} (PCC {kept['pcc']:.4f})"
        return (
            f"chose {voxels}, {snapshots}decoding temperature {self.temperature:g} by {self.folds}-fold "
            f"cross-validation on the fit trials (PCC {best['pcc']:.4f} of {len(self.candidates)} candidates){mix}{black}"
        )

    def _black_row(self) -> dict[str, Any]:
        return next(row for row in self.black_levels if row["black_level"] == self.black_level)


def summarize(record: dict[str, Any]) -> str:
    """What a run chose, in words, from its choices.json."""
    parts = []
    if "stage1_prior" in record:
        parts.append(f"stage I's variant of KL weight {record['stage1_prior']['chosen']['loss.kl_weight']:g}")
    if "chosen" in record:
        chosen = record["chosen"]
        parts.append(f"{chosen['train.selected_voxels'] or 'every'} voxels")
        if chosen["train.snapshots"] > 1:
            parts.append(f"the networks of stage-I epochs {', '.join(map(str, record['stage1_epochs']))}")
        parts.append(f"decoding temperature {chosen['inference.temperature']:g}")
        if chosen.get("train.readout_mix", 0) > 0:
            parts.append(f"readout mix {chosen['train.readout_mix']:g}")
        if chosen.get("inference.black_level", 0) > 0:
            parts.append(f"black level {chosen['inference.black_level']:g}")
    return ", ".join(parts)


Posteriors = dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold at one voxel count: its trials, and their voxels z-scored and selected on its training trials alone."""

    train: np.ndarray
    held_out: np.ndarray
    voxel_count: int
    train_voxels: np.ndarray
    held_out_voxels: np.ndarray


def cross_validation_folds(voxels: np.ndarray, images: np.ndarray, voxel_counts: tuple[int, ...], folds: int) -> Iterator[Fold]:
    """Every fold (trials split by FOLD_SEED) at every voxel count, count 0 (or one above the voxels there are)
    meaning every voxel: the folds every cross-validated reader of the voxels shares, so their scores pair up."""
    order = np.random.default_rng(FOLD_SEED).permutation(len(images))
    counts = sorted({0 if selection_size(voxels.shape[1], n) == voxels.shape[1] else n for n in voxel_counts})
    for held_out in np.array_split(order, folds):
        train = np.setdiff1d(np.arange(len(images)), held_out)
        scaler = VoxelScaler.fit(voxels[train])
        train_voxels, held_voxels = scaler.transform(voxels[train]), scaler.transform(voxels[held_out])
        for n in counts:
            kept = select_voxels(train_voxels, images[train], n)
            yield Fold(train, held_out, n, train_voxels[:, kept], held_voxels[:, kept])


def out_of_fold_posteriors(
    config: Config, members: list[States], voxels: np.ndarray, images: np.ndarray, voxel_counts: tuple[int, ...],
    folds: int, prior_images: np.ndarray | None = None, readout_mix: float = 0.0,
) -> Posteriors:
    """(voxel count, member) -> every trial's posterior (mu, logvar) by a readout fitted without the trial's fold.

    A count of 0 (or one above the voxels there are) means every voxel. The ridge-started cognitive encoder is
    linear, so each fold's readout is fitted and applied in latent space (initialisation.fit_latent_readout,
    the very fit stage II starts from, mixed by `readout_mix` with the inverted encoding model whose prior is
    the visual latents of `prior_images`), onto each member's own visual latent.
    """
    model_images = to_model_images(images, config.model.image_size)
    targets = [initialisation.visual_latent_means(config, states, model_images) for states in members]
    priors = [None] * len(members)
    if readout_mix > 0 and prior_images is not None:
        prior_model_images = to_model_images(prior_images, config.model.image_size)
        priors = [initialisation.visual_latent_means(config, states, prior_model_images) for states in members]
    latent_shape = (len(images), targets[0].shape[1])
    posteriors = {}
    for fold in cross_validation_folds(voxels, images, voxel_counts, folds):
        for k, (target, prior) in enumerate(zip(targets, priors)):
            readout = initialisation.fit_latent_readout(fold.train_voxels, target[fold.train], prior, readout_mix)
            mu, logvar = readout.predict(fold.held_out_voxels)
            pair = posteriors.setdefault((fold.voxel_count, k), (np.zeros(latent_shape, np.float32),
                                                                np.zeros(latent_shape, np.float32)))
            pair[0][fold.held_out], pair[1][fold.held_out] = mu, logvar
    return posteriors


def decode_posteriors(
    config: Config, members: list[States], keys: list[jax.Array], posteriors: Posteriors,
    voxel_counts: list[int], temperatures: tuple[float, ...], size: int,
) -> dict[tuple[int, float], np.ndarray]:
    """(voxel count, temperature) -> each member's decode (member, trial, H, W) of its posteriors, in [0, 1]."""
    decoders = {samples: jax.jit(make_decode(config, samples)) for samples in {0, config.inference.samples}}
    decoded = {}
    for n in voxel_counts:
        for t in temperatures:
            decode = decoders[config.inference.samples if t > 0 else 0]
            decoded[(n, t)] = np.stack([
                to_native_images(decode(states["generator"], *posteriors[(n, k)], rng.decode(key), jnp.float32(t)), size)
                for k, (states, key) in enumerate(zip(members, keys))
            ])
    return decoded


def out_of_fold_reconstructions(
    config: Config,
    members: list[States],
    keys: list[jax.Array],
    voxels: np.ndarray,
    images: np.ndarray,
    voxel_counts: tuple[int, ...],
    temperatures: tuple[float, ...],
    folds: int,
    prior_images: np.ndarray | None = None,
    readout_mix: float = 0.0,
) -> dict[tuple[int, float], np.ndarray]:
    """(voxel count, temperature) -> each member's reconstruction (member, trial, H, W) of each trial by a
    readout fitted without the trial's fold; the model's reconstruction is the average of its members'."""
    posteriors = out_of_fold_posteriors(config, members, voxels, images, voxel_counts, folds, prior_images, readout_mix)
    counts = sorted({n for n, _ in posteriors})
    return decode_posteriors(config, members, keys, posteriors, counts, temperatures, images.shape[1])


def choose(
    config: Config, members: list[States], keys: list[jax.Array], voxels: np.ndarray, images: np.ndarray,
    prior_images: np.ndarray | None = None,
) -> Choice:
    """Fill in the settings the config leaves to the run (-1), each candidate scored on its out-of-fold reconstructions.

    `members` are the most the run may keep, in `config.member_origins` order: each seed at the end of stage I,
    then each seed at every earlier snapshot, so a candidate of S snapshots keeps the first ensemble x S.
    Decoding at a temperature above 0 draws `inference.samples` posterior samples through G, the choice's main
    cost; only the `train.choice_shortlist` voxel counts that score best at temperature 0 (one G pass) are
    decoded at the others, as the voxel counts' order at temperature 0 foretold their order above it in every
    run measured (docs/experiments.md). Voxels and temperature are chosen with the first readout mix candidate;
    the other candidates are then scored at the chosen ones (`prior_images`: the encoding model's prior, stage
    I's image-only extras).
    """
    train, inference = config.train, config.inference
    voxel_counts = train.voxel_candidates if train.selected_voxels == AUTO else (train.selected_voxels,)
    snapshot_counts = sorted({n for n in train.snapshot_candidates if n <= most_snapshots(train)}
                             if train.snapshots == AUTO else {train.snapshots})
    temperatures = inference.temperature_candidates if inference.temperature == AUTO else (inference.temperature,)
    mixes = train.readout_mix_candidates if train.readout_mix == AUTO else (train.readout_mix,)
    folds = min(train.choice_folds, len(images))
    posteriors = out_of_fold_posteriors(config, members, voxels, images, voxel_counts, folds, prior_images, mixes[0])

    # Voxels and temperature are scored at the black level the config fixes, or uncut while the run chooses it.
    fixed_level = inference.black_level_in_use

    def score(images_by_member: np.ndarray, snapshots: int, black_level: float) -> dict[str, float]:
        kept = clear_faint_pixels(images_by_member[: train.ensemble * snapshots], black_level)
        scores = metrics.reconstruction_metrics(images, kept.mean(axis=0))
        return {m: float(np.mean(scores[m])) for m in SUMMARY_METRICS}

    def scored(decoded: dict[tuple[int, float], np.ndarray]) -> list[dict[str, Any]]:
        rows = []
        for (n, t), images_by_member in decoded.items():
            for s in snapshot_counts:
                rows.append({"selected_voxels": n, "snapshots": s, "temperature": t,
                             **score(images_by_member, s, fixed_level)})
        return rows

    counts = sorted({n for n, _ in posteriors})
    size = images.shape[1]
    decoded = decode_posteriors(config, members, keys, posteriors, counts, (0.0,), size)
    rows = scored(decoded)
    best_at_zero = {n: _rank(best_by_pcc([row for row in rows if row["selected_voxels"] == n])) for n in counts}
    shortlist = sorted(counts, key=best_at_zero.get, reverse=True)[: train.choice_shortlist or len(counts)]
    warmer = tuple(t for t in temperatures if t > 0)
    decoded.update(decode_posteriors(config, members, keys, posteriors, shortlist, warmer, size))
    rows = [row for row in rows if 0.0 in temperatures] + scored({setting: decoded[setting] for setting in
                                                                   itertools.product(shortlist, warmer)})
    best = best_by_pcc(rows)
    epochs = snapshot_epochs(dataclasses.replace(train, snapshots=best["snapshots"]))
    choice = Choice(best["selected_voxels"], best["snapshots"], epochs, best["temperature"], folds, rows,
                    readout_mix=mixes[0])
    setting = (best["selected_voxels"], best["temperature"])
    chosen = decoded[setting]
    if train.readout_mix == AUTO:
        decodes = {mixes[0]: chosen}
        for mix in mixes[1:]:
            mixed = out_of_fold_posteriors(config, members, voxels, images, setting[:1], folds, prior_images, mix)
            decodes[mix] = decode_posteriors(config, members, keys, mixed, [setting[0]], setting[1:], size)[setting]
        mix_rows = [{"readout_mix": mix, **score(decodes[mix], best["snapshots"], fixed_level)} for mix in mixes]
        kept = best_by_pcc(mix_rows)["readout_mix"]
        chosen = decodes[kept]
        choice = dataclasses.replace(choice, readout_mix=kept, readout_mixes=mix_rows)
    if inference.black_level != AUTO:
        return dataclasses.replace(choice, black_level=fixed_level)
    # PCC barely moves with the black level, SSIM does: the level is chosen by SSIM for the chosen decode, among
    # those that leave no reconstruction blank (a blank image has no PCC, and validation ranks checkpoints by it).
    levels = [{"black_level": b, **score(chosen, best["snapshots"], b)} for b in inference.black_level_candidates]
    eligible = [row for row in levels if np.isfinite(row["pcc"])] or levels[:1]
    return dataclasses.replace(choice, black_level=max(eligible, key=lambda row: row["ssim"])["black_level"],
                               black_levels=levels)


def _rank(row: dict[str, Any]) -> float:
    """A candidate's PCC as a sort key: NaN, the PCC of a blank reconstruction, below every score."""
    return row["pcc"] if np.isfinite(row["pcc"]) else -np.inf


def best_by_pcc(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate of highest pooled PCC (the first of equals); one with a NaN PCC never wins over a scored one."""
    return max(rows, key=_rank)


def unmade(config: Config, before: Config) -> Config:
    """`config` with every setting a run chooses as it stands in `before`, the config of a checkpoint saved
    before the choice (so that the choice is made again, alike)."""
    return dataclasses.replace(
        config,
        loss=dataclasses.replace(config.loss, kl_weight=before.loss.kl_weight),
        train=dataclasses.replace(config.train, selected_voxels=before.train.selected_voxels, snapshots=before.train.snapshots,
                                  readout_mix=before.train.readout_mix),
        inference=dataclasses.replace(config.inference, temperature=before.inference.temperature,
                                      black_level=before.inference.black_level),
    )


def apply(config: Config, choice: Choice) -> Config:
    """The config with the chosen settings written in."""
    return dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, selected_voxels=choice.selected_voxels, snapshots=choice.snapshots,
                                  readout_mix=choice.readout_mix),
        inference=dataclasses.replace(config.inference, temperature=choice.temperature, black_level=choice.black_level),
    )


@dataclasses.dataclass(frozen=True)
class PriorChoice:
    """The KL weight whose stage-I variant goes on, each candidate weight's best cross-validated row, and the
    kept variant's own choice of voxels and temperature."""

    kl_weight: float
    candidates: list[dict[str, Any]]
    choice: Choice

    @property
    def variant(self) -> int:
        """The kept variant's place among the candidates (its block of members on the member axis)."""
        return [row["kl_weight"] for row in self.candidates].index(self.kl_weight)

    def to_json(self) -> dict[str, Any]:
        """The choice and its evidence, as choices.json's `stage1_prior` holds them."""
        return {"chosen": {"loss.kl_weight": self.kl_weight}, "criterion": "pcc", "folds": self.choice.folds,
                "trials": "fit", "candidates": self.candidates}

    def describe(self) -> str:
        """One line for the run's log."""
        scores = ", ".join(f"{row['kl_weight']:g}: {row['pcc']:.4f}" for row in self.candidates)
        return (f"chose stage I's variant of KL weight {self.kl_weight:g} by {self.choice.folds}-fold cross-validation "
                f"on the fit trials (each variant's best PCC: {scores})")


def choose_prior(
    config: Config, members: list[States], keys: list[jax.Array], voxels: np.ndarray, images: np.ndarray,
    prior_images: np.ndarray | None = None,
) -> PriorChoice:
    """The stage-I variant (KL weight) whose best candidate of `choose` scores highest, with that choice.

    `members` are stage I's, in `config.member_origins` order (every seed at the first weight, then at the
    next), with the weights they hand on (their averages, if stage I keeps them).
    """
    ensemble = config.train.ensemble
    choices_by_weight = {}
    for v, weight in enumerate(config.loss.kl_candidates):
        variant = dataclasses.replace(config, loss=dataclasses.replace(config.loss, kl_weight=weight))
        block = slice(v * ensemble, (v + 1) * ensemble)
        choices_by_weight[weight] = choose(variant, members[block], keys[block], voxels, images, prior_images)
    rows = [{"kl_weight": weight, **max(choice.candidates, key=lambda row: row["pcc"])}
            for weight, choice in choices_by_weight.items()]
    best = max(rows, key=lambda row: row["pcc"])["kl_weight"]
    return PriorChoice(best, rows, choices_by_weight[best])


def apply_prior(config: Config, prior: PriorChoice) -> Config:
    """The config with the chosen KL weight and the kept variant's choices written in."""
    return apply(dataclasses.replace(config, loss=dataclasses.replace(config.loss, kl_weight=prior.kl_weight)), prior.choice)
