"""Train states, the stage table as data, and one generic builder for every network's update step.

A stage says who learns, which encoder feeds the generator and what the discriminator treats as real;
a learner's loss is a weighted sum of shared loss terms, its weights picked by the learner's role. Every
update step is the same function of (states, batch, key) specialised by (stage, learner).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state

from vaegan_jax import losses, rng
from vaegan_jax.augmentation import elastic_distort
from vaegan_jax.config import Config, LossConfig, member_count, prior_variants
from vaegan_jax.models import NETWORKS, build_networks, example_inputs
from vaegan_jax.sharding import MEMBERS, place_members, replicate, split_batch, training_mesh

Batch = dict[str, jax.Array]
States = dict[str, "TrainState"]
Metrics = dict[str, jax.Array]
# The loss settings (LossConfig fields) that differ between members, one value per member: stage I's variants.
MemberLoss = dict[str, jax.Array]


class TrainState(train_state.TrainState):
    """Parameters, optimiser state and BatchNorm running statistics of one network, and for a network whose
    weights stage I averages (`train.weight_average`), the moving average of its parameters and statistics
    (None otherwise)."""

    batch_stats: Any
    average: Any = None


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage of method.md, as data."""

    number: int
    encoder: str
    learners: tuple[str, ...]
    real: str
    prior_samples: bool
    averaged: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Tag prefix, e.g. 'stage1'."""
        return f"stage{self.number}"

    @property
    def paired(self) -> bool:
        """Whether the stage needs fMRI (paired trials) rather than images alone."""
        return self.encoder == "cognitive_encoder"


STAGES = (
    # I: VAE/GAN on images; D compares real images with reconstructions and prior samples. The image path's
    # networks may hand on moving averages of their weights: a GAN's last weights wander from step to step.
    Stage(1, "visual_encoder", ("discriminator", "generator", "visual_encoder"), "stimulus", True,
          averaged=("generator", "visual_encoder")),
    # II: the fMRI path learns to land where the frozen image path lands, in D's feature space.
    Stage(2, "cognitive_encoder", ("discriminator", "cognitive_encoder"), "visual_reconstruction", False),
    # III: the generator and D are fine-tuned on fMRI reconstructions against real images.
    Stage(3, "cognitive_encoder", ("discriminator", "generator"), "stimulus", False),
)


def role(learner: str) -> str:
    """'encoder' for either encoder, else the network's own name."""
    return "encoder" if learner.endswith("encoder") else learner


def loss_weights(learner: str, config: LossConfig) -> dict[str, float]:
    """Weights of the shared loss terms in a learner's loss (Larsen et al.: no GAN term for encoders)."""
    return {
        "discriminator": {"gan_discriminator": 1.0},
        # gamma weighs the generator's content terms against style (Larsen et al.), pixels included.
        "generator": {"llike": config.gamma, "pixel": config.gamma * config.pixel_weight, "gan_generator": 1.0},
        "encoder": {
            "kl": config.kl_weight, "llike": config.llike_weight, "pixel": config.pixel_weight,
            "latent_distill": config.latent_distill,
        },
    }[role(learner)]


def make_optimizer(config: Config, network: str) -> optax.GradientTransformation:
    """RMSProp with staircase exponential decay; weight decay on the cognitive encoder if configured."""
    opt = config.optim
    schedule = optax.exponential_decay(
        getattr(opt, f"lr_{network}"), opt.lr_decay_steps, opt.lr_decay_rate, staircase=True
    )
    tx = optax.rmsprop(schedule, decay=opt.rmsprop_decay, eps=opt.rmsprop_eps, initial_scale=opt.rmsprop_initial_scale)
    if network == "cognitive_encoder" and opt.cognitive_weight_decay > 0:
        tx = optax.chain(optax.add_decayed_weights(opt.cognitive_weight_decay), tx)
    return tx


AVERAGED = frozenset(name for stage in STAGES for name in stage.averaged)


def weights_of(state: TrainState) -> dict[str, Any]:
    """A network's parameters and BatchNorm statistics: what a moving average of its weights covers."""
    return {"params": state.params, "batch_stats": state.batch_stats}


# One compiled program: run op by op, initialisation compiled some 185 small ones (a cold tiny run compiled
# 225 programs in 31.6 s that way, 40 in 26.7 s this way, on the CPU).
@functools.partial(jax.jit, static_argnums=(0, 1))
def create_states(config: Config, n_voxels: int, key: jax.Array) -> States:
    """Freshly initialised train states of all four networks (with averages where `train.weight_average` asks)."""
    networks = build_networks(config.model)
    inputs = example_inputs(config.model, n_voxels)
    states = {}
    for name, key_net in zip(NETWORKS, jax.random.split(key, len(NETWORKS))):
        variables = networks[name].init(key_net, inputs[name], train=False)
        state = TrainState.create(
            apply_fn=networks[name].apply,
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            tx=make_optimizer(config, name),
        ).replace(step=jnp.zeros((), jnp.int32))
        if config.train.weight_average > 0 and name in AVERAGED:
            # Copies: a donated state must not hold one buffer twice.
            state = state.replace(average=jax.tree.map(jnp.copy, weights_of(state)))
        states[name] = state
    return states


def hand_on_averages(states: States) -> States:
    """The states with each averaged network's weights replaced by its moving average (what stage I hands on)."""
    return {name: state if state.average is None else state.replace(**state.average) for name, state in states.items()}


def decoding_states(states: States, stage: int) -> States:
    """The states that a checkpoint of `stage` decodes with: stage I's networks as it hands them on, later ones as
    they are (stages II and III keep stage I's averages, which no longer are the image path's weights)."""
    return hand_on_averages(states) if stage == 1 else states


def member_loss(config: Config, stage: int) -> MemberLoss:
    """Each member's value of the loss settings that differ between members (`MemberLoss`), in member order."""
    weights = prior_variants(config, stage)
    if not weights:
        return {}
    return {"kl_weight": jnp.repeat(jnp.asarray(weights, jnp.float32), config.train.ensemble)}


def _member_weights(learner: str, config: LossConfig, varying: MemberLoss | None) -> dict[str, Any]:
    """The weights of the terms in a learner's loss (those the config weighs at all), with this member's own
    values of the `varying` fields."""
    weights = loss_weights(learner, dataclasses.replace(config, **(varying or {})))
    return {t: weights[t] for t, w in loss_weights(learner, config).items() if w != 0}


def _weighted_sum(learner: str, config: LossConfig, terms: dict[str, jax.Array], varying: MemberLoss | None) -> jax.Array:
    """A learner's loss: its terms weighted by the config, with this member's own values of `varying` fields."""
    return sum(w * terms[t] for t, w in _member_weights(learner, config, varying).items())


def create_members(config: Config, n_voxels: int, keys: jax.Array) -> States:
    """Train states of every member, stacked on a leading member axis (member k from `keys[k]`)."""
    return jax.vmap(lambda key: create_states(config, n_voxels, rng.init(key)))(keys)


def take_member(states: States, k: int) -> States:
    """Member k's states, without the member axis."""
    return jax.tree.map(lambda a: a[k], states)


def stack_members(members: list[States]) -> States:
    """Per-member states stacked on a leading member axis (the inverse of `take_member`)."""
    return jax.tree.map(lambda *parts: jnp.stack(parts), *members)


def _make_apply(networks: dict[str, nn.Module], params: dict, states: States, training: tuple[str, ...]):
    """A function applying a network by name; networks in `training` use batch statistics.

    The returned `stats` dict receives the running-statistic updates of the training networks.
    """
    stats = {name: states[name].batch_stats for name in NETWORKS}

    def apply(name: str, x: jax.Array, key: jax.Array | None = None):
        variables = {"params": params[name], "batch_stats": stats[name]}
        if name not in training:
            return networks[name].apply(variables, x, train=False)
        out, updates = networks[name].apply(
            variables, x, train=True, mutable=["batch_stats"], rngs=None if key is None else {"dropout": key}
        )
        stats[name] = updates.get("batch_stats", {})
        return out

    return apply, stats


def loss_terms(
    networks: dict[str, nn.Module],
    params: dict,
    states: States,
    stage: Stage,
    batch: Batch,
    key: jax.Array,
    loss_config: LossConfig,
    training: tuple[str, ...],
) -> tuple[dict[str, jax.Array], dict]:
    """Every loss term of a stage for one batch, and the networks' updated running statistics."""
    apply, stats = _make_apply(networks, params, states, training)
    key_eps, key_prior, key_dropout = jax.random.split(key, 3)
    source = batch["voxels"] if stage.paired else batch["image"]
    mu, logvar = apply(stage.encoder, source, key_dropout)
    reconstruction = apply("generator", losses.reparameterize(key_eps, mu, logvar))
    if stage.real == "stimulus":
        real, target_mu = batch["image"], None
    else:
        target_mu, _ = apply("visual_encoder", batch["image"])
        real = apply("generator", target_mu)
    real_logit, real_features = apply("discriminator", real)
    fake_logit, fake_features = apply("discriminator", reconstruction)
    gan_discriminator = losses.gan_bce(real_logit, loss_config.real_label) + losses.gan_bce(fake_logit, 0.0)
    gan_generator = losses.gan_bce(fake_logit, loss_config.generator_label)
    if stage.prior_samples:
        z_prior = jax.random.normal(key_prior, mu.shape, mu.dtype)
        prior_logit, _ = apply("discriminator", apply("generator", z_prior))
        gan_discriminator += losses.gan_bce(prior_logit, 0.0)
        gan_generator += losses.gan_bce(prior_logit, loss_config.generator_label)
    terms = {
        "kl": losses.kl_to_standard_normal(mu, logvar),
        "llike": losses.feature_nll(fake_features, real_features),
        "pixel": losses.pixel_nll(reconstruction, real),
        "gan_discriminator": gan_discriminator,
        "gan_generator": gan_generator,
        "latent_distill": (
            jnp.zeros(()) if target_mu is None else losses.latent_distance(mu, target_mu)
        ),
    }
    return terms, stats


def _apply_update(state: TrainState, grads: Any, batch_stats: Any, decay: float) -> TrainState:
    """A learner's state after one optimiser step on `grads`, with new BatchNorm statistics and, for a
    network whose weights are averaged (`decay` > 0), its moving average advanced."""
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    if decay > 0:
        # The mean of every weight so far until there are 1 / (1 - decay) of them, then the moving average:
        # a short stage I hands on its own weights, not its initial ones.
        step = state.step.astype(jnp.float32)
        kept = jnp.minimum(decay, step / (step + 1.0))
        average = optax.incremental_update(weights_of(new_state), new_state.average, 1.0 - kept)
        new_state = new_state.replace(average=average)
    return new_state


def _learner_metrics(learner: str, loss: jax.Array, grads: Any, terms: dict[str, jax.Array]) -> Metrics:
    """What a learner's update reports: its loss, gradient norm and the terms its loss weighs."""
    metrics = {f"loss/{learner}": loss, f"grad_norm/{learner}": optax.tree.norm(grads)}
    metrics.update({f"{learner}/{t}": v for t, v in terms.items()})
    return metrics


def _decay(config: Config, stage: Stage, learner: str) -> float:
    """The decay of a learner's moving weight average in `stage` (0: it keeps none)."""
    return config.train.weight_average if learner in stage.averaged else 0.0


def make_update_step(
    config: Config, stage: Stage, learner: str
) -> Callable[[States, Batch, jax.Array, MemberLoss], tuple[TrainState, Metrics]]:
    """The update of one network in one stage: (states, batch, key, member's loss settings) -> (learner's new
    state, metrics)."""
    networks = build_networks(config.model)
    reported = loss_weights(learner, config.loss)

    def update(states: States, batch: Batch, key: jax.Array, varying: MemberLoss | None = None) -> tuple[TrainState, Metrics]:
        def objective(learner_params):
            params = {name: states[name].params for name in NETWORKS}
            params[learner] = learner_params
            terms, stats = loss_terms(networks, params, states, stage, batch, key, config.loss, stage.learners)
            loss = _weighted_sum(learner, config.loss, terms, varying)
            return loss, ({t: terms[t] for t in reported}, stats[learner])

        (loss, (terms, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(states[learner].params)
        new_state = _apply_update(states[learner], grads, new_stats, _decay(config, stage, learner))
        return new_state, _learner_metrics(learner, loss, grads, terms)

    return update


def make_joint_gradients(
    config: Config, stage: Stage
) -> Callable[[States, Batch, jax.Array, MemberLoss], tuple[dict[str, tuple[jax.Array, Any, dict]], dict]]:
    """Every learner's (loss, gradient, reported terms) from one forward pass, and the networks' new running
    statistics: (states, batch, key, member's loss settings) -> ({learner: (loss, grads, terms)}, stats)."""
    networks = build_networks(config.model)

    def gradients(states: States, batch: Batch, key: jax.Array, varying: MemberLoss | None = None):
        params = {name: states[name].params for name in NETWORKS}

        def all_terms(learner_params):
            return loss_terms(networks, {**params, **learner_params}, states, stage, batch, key, config.loss, stage.learners)

        terms, pull_back, stats = jax.vjp(all_terms, {n: params[n] for n in stage.learners}, has_aux=True)
        results = {}
        for learner in stage.learners:
            weights = _member_weights(learner, config.loss, varying)
            # The cotangent of a weighted sum of the terms is its weights, 0 for the terms it leaves out.
            (grads,) = pull_back({t: jnp.full_like(v, weights.get(t, 0.0)) for t, v in terms.items()})
            loss = _weighted_sum(learner, config.loss, terms, varying)
            results[learner] = (loss, grads[learner], {t: terms[t] for t in loss_weights(learner, config.loss)})
        return results, stats

    return gradients


def make_simultaneous_step(config: Config, stage: Stage) -> Callable[[States, Batch, jax.Array, MemberLoss], tuple[States, Metrics]]:
    """One iteration of a stage as Larsen et al.'s Algorithm 1 has it: every learner's gradient of its own loss
    from one forward pass, each applied to the weights that pass saw."""
    gradients = make_joint_gradients(config, stage)

    def train_step(states: States, batch: Batch, key: jax.Array, varying: MemberLoss | None = None) -> tuple[States, Metrics]:
        results, stats = gradients(states, batch, key, varying)
        new_states, metrics = dict(states), {}
        for learner, (loss, grads, terms) in results.items():
            new_states[learner] = _apply_update(states[learner], grads, stats[learner], _decay(config, stage, learner))
            metrics.update(_learner_metrics(learner, loss, grads, terms))
        return new_states, metrics

    return train_step


def make_train_step(config: Config, stage: Stage) -> Callable[[States, Batch, jax.Array, MemberLoss], tuple[States, Metrics]]:
    """One iteration of a stage: each learner's update in the stage's order, each seeing the last's result
    (`train.updates` sequential), or all from one forward pass (simultaneous)."""
    if config.train.updates == "simultaneous":
        return make_simultaneous_step(config, stage)
    updates = {learner: make_update_step(config, stage, learner) for learner in stage.learners}

    def train_step(states: States, batch: Batch, key: jax.Array, varying: MemberLoss | None = None) -> tuple[States, Metrics]:
        metrics = {}
        for learner in stage.learners:
            new_state, learner_metrics = updates[learner](states, batch, key, varying)
            states = {**states, learner: new_state}
            metrics.update(learner_metrics)
        return states, metrics

    return train_step


def steps_per_call(config: Config) -> int:
    """Training steps per compiled call: the whole epoch on accelerators, a few unrolled ones on the CPU.

    On XLA's CPU backend a convolution's gradient inside a while loop (what `lax.scan` compiles to)
    runs about 9x slower than the same code unrolled (measured: 0.9 s vs 0.1 s per `fast` stage-I step),
    so the CPU runs short fully unrolled scans; elsewhere one scan covers the epoch.
    """
    if config.train.steps_per_call > 0:
        return config.train.steps_per_call
    return 4 if jax.default_backend() == "cpu" else 0


class EpochRunner:
    """One epoch of a stage for every ensemble member: a permutation of the data per member, then
    `lax.scan`s of train steps over its batches, the members vmapped and split across the mesh's member
    groups, each batch split across its batch shards.

    Each scan is one compiled call with the states donated; the epoch needs at most two programs (full
    chunks and the remainder), compiled in the first epoch and reused after. States carry a leading member
    axis; returns the new states and per-step metrics (axes: member, step), so a non-finite loss can be
    traced to its member and step. `mesh` defaults to the config's `training_mesh`; `run_chunk` traces only
    under `jax.set_mesh(self.mesh)`, which `__call__` provides.
    """

    def __init__(self, config: Config, stage: Stage, n_examples: int, mesh: jax.sharding.Mesh | None = None) -> None:
        self.stage = stage
        self.batch_size = config.train.batch_size
        self.n_batches = n_examples // self.batch_size
        chunk = steps_per_call(config)
        self.chunk = self.n_batches if chunk == 0 else min(chunk, self.n_batches)
        unroll = chunk != 0
        train_step = make_train_step(config, stage)
        n_members = member_count(config, stage.number)
        self.mesh = training_mesh(n_members, self.batch_size) if mesh is None else mesh
        self.member_loss = member_loss(config, stage.number)

        augment = 0.0 if stage.paired else config.train.elastic_augment

        def run_chunk(
            states: States, data: Batch, order: jax.Array, keys: jax.Array, varying: MemberLoss
        ) -> tuple[States, Metrics]:
            def body(carry: States, xs):
                indices, step_key = xs
                batch = jax.tree.map(lambda a: a[indices], data)
                if augment > 0:
                    distorted = elastic_distort(rng.augment(step_key), batch["image"], augment)
                    batch = {**batch, "image": distorted}
                return train_step(carry, split_batch(batch), step_key, varying)

            if order.shape[0] == 1:
                # jax compiles a scan of one step to a while loop even when told to unroll it, and on the CPU a
                # convolution's gradient runs about 9x slower inside one: a one-step chunk is that step.
                states, metrics = body(states, (order[0], keys[0]))
                return states, jax.tree.map(lambda m: m[None], metrics)
            return jax.lax.scan(body, states, (order, keys), unroll=unroll)

        def summary(states: States) -> Metrics:
            norms = {f"param_norm/{n}": optax.tree.norm(states[n].params) for n in stage.learners}
            finite = {
                f"finite/{n}": jnp.all(jnp.stack([
                    jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves((states[n].params, states[n].batch_stats))
                ]))
                for n in stage.learners
            }
            return {**norms, **finite}

        def plan(key: jax.Array) -> tuple[jax.Array, jax.Array]:
            order = jax.random.permutation(jax.random.fold_in(key, 0), n_examples)
            order = order[: self.n_batches * self.batch_size].reshape(self.n_batches, self.batch_size)
            return order, jax.random.split(jax.random.fold_in(key, 1), self.n_batches)

        def run_one_member(
            states: States, data: Batch, order: jax.Array, keys: jax.Array, varying: MemberLoss
        ) -> tuple[States, Metrics]:
            new_states, metrics = run_chunk(take_member(states, 0), data, order[0], keys[0], take_member(varying, 0))
            return jax.tree.map(lambda a: a[None], (new_states, metrics))

        members, shared = jax.sharding.PartitionSpec(MEMBERS), jax.sharding.PartitionSpec()
        # Only the member axis is manual: the batch axis stays with XLA, which then computes BatchNorm
        # statistics and gradients over the whole batch, as one device would.
        run_members = jax.shard_map(
            jax.vmap(run_chunk, in_axes=(0, None, 0, 0, 0)), mesh=self.mesh,
            in_specs=(members, shared, members, members, members), out_specs=members, axis_names={MEMBERS},
        )
        # A lone model skips the member machinery: for the `seed` preset on the CPU a vmapped chunk of one
        # member ran at 1368 ms per step, the same steps unvmapped at 1144 (measured by benchmarks/bench.py).
        # Fixed output shardings keep the next chunk's inputs where the compiled program expects them.
        self.run_chunk = jax.jit(run_one_member if n_members == 1 else run_members, donate_argnums=(0,),
                                 out_shardings=jax.sharding.NamedSharding(self.mesh, members))
        self.summary = jax.jit(jax.vmap(summary))
        self.plan = jax.jit(jax.vmap(plan))

    def __call__(self, states: States, data: Batch, keys: jax.Array) -> tuple[States, Metrics]:
        """Train one epoch, member k drawing from `keys[k]`; the states passed in are donated (do not reuse them)."""
        # Placing every input where the program expects it (a no-op for the trainer's own states) lets states
        # from anywhere, a restore included, run the program compiled in the first epoch.
        states, (order, step_keys), varying = place_members((states, self.plan(keys), self.member_loss), self.mesh)
        data = replicate(data, self.mesh)
        chunks = []
        with jax.set_mesh(self.mesh):
            for start in range(0, self.n_batches, self.chunk):
                stop = min(start + self.chunk, self.n_batches)
                states, metrics = self.run_chunk(states, data, order[:, start:stop], step_keys[:, start:stop], varying)
                chunks.append(metrics)
        metrics = jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=1), *chunks)
        return states, {**metrics, **self.summary(states)}

    def compilations(self) -> int:
        """How many programs the epoch's chunk function has compiled (for tests of recompilation)."""
        return self.run_chunk._cache_size()


def make_eval_losses(config: Config, stage: Stage) -> Callable[[States, Batch, jax.Array, MemberLoss], Metrics]:
    """Each learner's loss on a batch with every network in inference mode (for validation curves)."""
    networks = build_networks(config.model)

    def eval_losses(states: States, batch: Batch, key: jax.Array, varying: MemberLoss | None = None) -> Metrics:
        params = {name: states[name].params for name in NETWORKS}
        terms, _ = loss_terms(networks, params, states, stage, batch, key, config.loss, ())
        return {f"loss/{learner}": _weighted_sum(learner, config.loss, terms, varying) for learner in stage.learners}

    return eval_losses


def make_decode(config: Config, samples: int) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]:
    """G's image of a posterior (mu, logvar): (generator state, mu, logvar, key, temperature) -> images.

    With `samples` 0 it decodes the posterior mean; else the mean of G over `samples` draws
    mu + temperature * sigma * eps, the draws eps fixed by `key` and shared by every trial, so that a trial's
    image depends on its own posterior alone, not on the others decoded with it.
    """
    generator = build_networks(config.model)["generator"]

    def decode(state: TrainState, mu: jax.Array, logvar: jax.Array, key: jax.Array, temperature: jax.Array) -> jax.Array:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        if samples == 0:
            return generator.apply(variables, mu, train=False)
        eps = jax.random.normal(key, (samples, 1, mu.shape[-1]), mu.dtype)
        z = (mu + temperature * jnp.exp(0.5 * logvar) * eps).reshape(-1, mu.shape[-1])
        images = generator.apply(variables, z, train=False)
        return jnp.mean(images.reshape(samples, *mu.shape[:1], *images.shape[1:]), axis=0)

    return decode


def make_reconstruct(config: Config, encoder: str) -> Callable[[States, jax.Array, jax.Array], jax.Array]:
    """Deterministic reconstruction through `encoder` with BN running statistics: (states, inputs, key).

    The image path decodes the posterior mean; the fMRI path follows `config.inference` (posterior mean,
    or the mean of G over posterior draws fixed by `key`, a model's base key).
    """
    network = build_networks(config.model)[encoder]
    temperature = config.inference.temperature_in_use
    decode = make_decode(config, config.inference.samples_in_use if encoder == "cognitive_encoder" else 0)

    def reconstruct(states: States, inputs: jax.Array, key: jax.Array) -> jax.Array:
        variables = {"params": states[encoder].params, "batch_stats": states[encoder].batch_stats}
        mu, logvar = network.apply(variables, inputs, train=False)
        return decode(states["generator"], mu, logvar, key, temperature)

    return reconstruct
