"""Training-step speed of each stage and preset, side by side with the eager-PyTorch peer.

For every (preset, stage) it measures, on the embedded synthetic data prepared as training.Trainer does:
  step ms      one training step (every learner's update of the stage) as one jitted call, median
  epoch ms     the same step inside a compiled chunk of steps.EpochRunner (K unrolled steps per call on
               the CPU, the whole epoch on accelerators), per step; what a training run actually executes
  compile s    compile time of the single step (and of the chunk)
  GFLOP        XLA's flop count of one step (cost_analysis of the compiled step)
  GFLOP/s      achieved rate of the single step; %mm (%mm ep) the step's (chunk's) rate as a fraction of
               the float32 matmul rate (a large jnp.dot) measured alternately with the step's samples:
               the median over samples of (step rate / matmul rate just before it); on NVIDIA GPUs jax's
               default float32 matmul runs in TF32, and so does the model's
  memory       XLA's buffer need of the compiled step (arguments + outputs - aliased + temporaries), and the
               process's resident-set peak so far (CPU) or the device's peak bytes in use so far (accelerators)

--set KEY=VALUE overrides a config field of every preset (e.g. model.compute_dtype=bfloat16).

With --ensemble K (default 4) it then times the `fast` preset's epoch chunk per step for each stage with one
member and with K members (alternating, same data), and prints the ratio: what training an ensemble costs.

With --loop-epochs N it trains N epochs of each preset's stage II through the real training loop (validation
and checkpoints on the preset's schedule) and prints the loop's own work per epoch: the stage's wall time less
the time it waited on the epochs' results (train.py's summary prints the same for a whole run).

With --peer PYTHON it runs the peer script (eager PyTorch, the `seed` geometry, stage I, batch 5) with that
interpreter in rounds interleaved with our own seed stage-I measurement (peer, ours, peer, ours, ...), so
slow drift in the machine's load hits both alike, and prints the ratio ours/peer (median over rounds).
Interleaving does not cancel contention itself: with other processes on the cores eager PyTorch slows down
far more than XLA (seen: 9x against 3.5x at a load average of 6 on 2 cores), which flatters the ratio.
Judge it on a quiet machine; the load average is printed and kept in the JSON.

The peer's interpreter, set up once outside the repository (the CPU wheel of torch; plain torch==2.13.0 from
PyPI is the CUDA build with gigabytes of libraries the peer does not use):
    python3 -m venv /work/torchpeer
    /work/torchpeer/bin/pip install "torch==2.13.0+cpu" numpy --extra-index-url https://download.pytorch.org/whl/cpu

    .venv/bin/python benchmarks/bench.py --peer /work/torchpeer/bin/python --json /tmp/bench.json
    .venv/bin/python benchmarks/bench.py --quick              # seed and paper, stage I only, few steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
# Runs as a plain script from anywhere, so the package is found next to this folder.
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vaegan_jax import config as config_lib  # noqa: E402
from vaegan_jax.data import load_synthetic  # noqa: E402
from vaegan_jax.errors import ConfigError  # noqa: E402
from vaegan_jax.runs import RunPaths  # noqa: E402
from vaegan_jax.sharding import place_members  # noqa: E402
from vaegan_jax.steps import STAGES, States, make_train_step, take_member  # noqa: E402
from vaegan_jax.training import Trainer  # noqa: E402

PEER_SCRIPT = REPO.parent / "shared" / "bench" / "torch_peer.py"
PEER_PRESET, PEER_STAGE, PEER_BATCH = "seed", 1, 5
MiB = 2**20


@dataclasses.dataclass
class Row:
    """One (preset, stage) measurement."""

    preset: str
    stage: int
    batch: int
    image_size: int
    learners: list[str]
    compile_s: float
    step_ms: float
    step_ms_samples: list[float]
    flops: float
    gflops_per_s: float
    matmul_gflops_per_s: float
    matmul_gflops_samples: list[float]
    matmul_fraction: float
    xla_mib: float
    peak_mib: float
    chunk: int | None = None
    epoch_compile_s: float | None = None
    epoch_ms: float | None = None
    epoch_ms_samples: list[float] = dataclasses.field(default_factory=list)
    epoch_matmul_fraction: float | None = None


def _copy(tree: Any) -> Any:
    """A fresh copy of a pytree, so donating it leaves the original usable."""
    return jax.tree.map(jnp.copy, tree)


def _timed(call: Callable[[], Any]) -> float:
    """Wall-clock milliseconds of `call()` until its results are ready."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    return (time.perf_counter() - start) * 1e3


def matmul_rate(reps: int = 5) -> float:
    """The device's float32 matmul rate in GFLOP/s: median over `reps` products of two large matrices."""
    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, b))
    ms = statistics.median(_timed(lambda: dot(a, b)) for _ in range(reps))
    return 2 * n**3 / (ms * 1e-3) / 1e9


def peak_memory_mib() -> float:
    """The device's peak bytes in use where it reports them, else the process's resident-set peak so far."""
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MiB


def xla_buffer_mib(compiled: jax.stages.Compiled) -> float:
    """What XLA allocates for one call of a compiled program: arguments, non-aliased outputs, temporaries."""
    m = compiled.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes) / MiB


class StageBench:
    """Compiled single step and EpochRunner chunk of one (preset, stage), each compiled on demand, with their own
    donated states."""

    def __init__(self, trainer: Trainer, stage_number: int) -> None:
        self.stage = STAGES[stage_number - 1]
        self.config = trainer.config
        self.data = trainer.arrays["paired" if self.stage.paired else "images_only"]
        self.batch_size = self.config.train.batch_size
        self.batch = {k: v[: self.batch_size] for k, v in self.data.items()}
        self.runner = trainer.epoch_runners[stage_number]
        self.key = jax.random.key(1)
        self.trainer_states = trainer.states
        self.calls = 0
        self.chunk_compiled: jax.stages.Compiled | None = None

    def compile_step(self) -> float:
        """Compile the single jitted step and record its flops and buffers; returns its compile time in seconds."""
        self.step_states: States = _copy(take_member(self.trainer_states, 0))
        step = jax.jit(make_train_step(self.config, self.stage), donate_argnums=(0,))
        start = time.perf_counter()
        self.step = step.lower(self.step_states, self.batch, self.key).compile()
        seconds = time.perf_counter() - start
        self.flops = float(self.step.cost_analysis()["flops"])
        self.xla_mib = xla_buffer_mib(self.step)
        _timed(self._step_call)  # warm-up: first-call allocations
        return seconds

    def _step_call(self) -> Any:
        key = jax.random.fold_in(self.key, self.calls)
        self.calls += 1
        self.step_states, metrics = self.step(self.step_states, self.batch, key)
        return self.step_states, metrics

    def time_step(self, reps: int) -> list[float]:
        """Milliseconds of `reps` single-step calls."""
        return [_timed(self._step_call) for _ in range(reps)]

    def compile_chunk(self) -> float:
        """Compile the EpochRunner's chunk of steps; returns its compile time in seconds."""
        self.chunk = self.runner.chunk
        order, keys = self.runner.plan(jax.random.split(jax.random.key(2), self.config.train.ensemble))
        self.order, self.chunk_keys = order[:, : self.chunk], keys[:, : self.chunk]
        self.chunk_states: States = _copy(self.trainer_states)
        self.member_loss = place_members(self.runner.member_loss, self.runner.mesh)
        start = time.perf_counter()
        # The chunk's batches are laid out on the run's mesh, which tracing reads from the context.
        with jax.set_mesh(self.runner.mesh):
            self.chunk_compiled = self.runner.run_chunk.lower(
                self.chunk_states, self.data, self.order, self.chunk_keys, self.member_loss
            ).compile()
        seconds = time.perf_counter() - start
        _timed(self._chunk_call)  # warm-up
        return seconds

    def _chunk_call(self) -> Any:
        self.chunk_states, metrics = self.chunk_compiled(
            self.chunk_states, self.data, self.order, self.chunk_keys, self.member_loss
        )
        return self.chunk_states, metrics

    def time_chunk(self, reps: int) -> list[float]:
        """Milliseconds per step of `reps` chunk calls."""
        return [_timed(self._chunk_call) / self.chunk for _ in range(reps)]


def make_trainer(preset: str, dataset: Any, workdir: Path, ensemble: int = 1, overrides: tuple[str, ...] = ()) -> Trainer:
    """A Trainer of the preset (with `ensemble` members and the `--set` overrides) on the data; it writes
    nothing until it trains."""
    config = config_lib.override(config_lib.preset(preset), [*overrides, f"train.ensemble={ensemble}"])
    return Trainer(config, dataset, RunPaths(workdir / f"{preset}-{ensemble}"), progress=False)


def ensemble_cost(
    preset: str, members: int, stages: list[int], dataset: Any, workdir: Path, reps: int, overrides: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Per-step time of an epoch chunk with `members` members against one model, stage by stage, alternated."""
    result = {"preset": preset, "members": members, "stages": {}}
    for number in stages:
        benches = [StageBench(make_trainer(preset, dataset, workdir, k, overrides), number) for k in (1, members)]
        for bench in benches:
            bench.compile_chunk()
        samples: list[list[float]] = [[], []]
        for _ in range(reps):
            for i, bench in enumerate(benches):
                samples[i] += bench.time_chunk(1)
        one, many = (statistics.median(x) for x in samples)
        result["stages"][number] = {"one_ms": one, "ensemble_ms": many, "ratio": many / one,
                                    "one_samples": samples[0], "ensemble_samples": samples[1]}
        print(f"ensemble {preset} stage {number}: 1 member {one:.1f} ms/step, {members} members {many:.1f} "
              f"ms/step, ratio {many / one:.2f}", flush=True)
        del benches
    return result


def loop_cost(preset: str, epochs: int, dataset: Any, workdir: Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The training loop's own work per epoch: a real `epochs`-epoch stage II of the preset (validation and
    checkpoints on the preset's schedule), its wall time against the time it waited on the epochs' results."""
    fixed = ("train.selected_voxels=450", "inference.temperature=1")  # no choice: stage I does not train here
    trainer = make_trainer(preset, dataset, workdir / "loop", overrides=(*overrides, *fixed, f"train.epochs=0,{epochs},0"))
    trainer.paths.root.mkdir(parents=True)
    trainer.train()
    timing = trainer.timing["stage2"]
    own = timing["seconds"] - timing["waiting_seconds"]
    result = {"preset": preset, "stage": 2, **timing, "own_ms_per_epoch": 1000 * own / timing["epochs"],
              "eval_every": trainer.config.train.eval_every, "checkpoint_every": trainer.config.train.checkpoint_every}
    print(f"loop {preset} stage 2: {timing['epochs']} epochs in {timing['seconds']:.2f} s, waiting on the epochs "
          f"{timing['waiting_seconds']:.2f} s, the loop's own work {result['own_ms_per_epoch']:.1f} ms per epoch "
          f"(validation every {result['eval_every']}, checkpoint every {result['checkpoint_every']})", flush=True)
    shutil.rmtree(workdir / "loop")
    return result


def run_peer(python: str, script: Path, steps: int) -> float:
    """Milliseconds per stage-I step of the PyTorch peer, from one run of its script."""
    done = subprocess.run([python, str(script), str(steps), str(PEER_BATCH)], capture_output=True, text=True)
    match = re.search(r"torch_stage1_ms_per_step\s+([0-9.]+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"peer {python} {script} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return float(match.group(1))


def measure(
    bench: StageBench, steps: int, epoch: bool, peer: Callable[[], float] | None, rounds: int
) -> tuple[Row, dict[str, Any] | None]:
    """Time a stage: `rounds` rounds, each after one peer run when `peer` is given."""
    step_compile = bench.compile_step()
    epoch_compile = bench.compile_chunk() if epoch else None
    step_samples: list[float] = []
    epoch_samples: list[float] = []
    rates, peer_ms, ratios, epoch_ratios = [], [], [], []
    for _ in range(rounds):
        if peer is not None:
            peer_ms.append(peer())
        ours, ours_epoch = [], []
        # Alternate the matmul reference, single steps and chunks, so that the load of a shared machine
        # hits all three alike; fractions of the matmul rate are taken sample by sample.
        for _ in range(steps):
            rates.append(matmul_rate(reps=3))
            ours += bench.time_step(1)
            if epoch:
                ours_epoch += bench.time_chunk(1)
        step_samples += ours
        epoch_samples += ours_epoch
        if peer is not None:
            ratios.append(statistics.median(ours) / peer_ms[-1])
            if epoch:
                epoch_ratios.append(statistics.median(ours_epoch) / peer_ms[-1])
    step_ms = statistics.median(step_samples)
    gflops = bench.flops / (step_ms * 1e-3) / 1e9

    def fraction(samples: list[float]) -> float:
        return statistics.median(bench.flops / (ms * 1e6) / rate for ms, rate in zip(samples, rates))

    row = Row(
        preset=bench.config.preset, stage=bench.stage.number, batch=bench.batch_size,
        image_size=bench.config.model.image_size, learners=list(bench.stage.learners),
        compile_s=step_compile, step_ms=step_ms, step_ms_samples=step_samples, flops=bench.flops,
        gflops_per_s=gflops, matmul_gflops_per_s=statistics.median(rates), matmul_gflops_samples=rates,
        matmul_fraction=fraction(step_samples),
        xla_mib=bench.xla_mib, peak_mib=peak_memory_mib(),
    )
    if epoch:
        row.chunk = bench.chunk
        row.epoch_compile_s = epoch_compile
        row.epoch_ms = statistics.median(epoch_samples)
        row.epoch_ms_samples = epoch_samples
        row.epoch_matmul_fraction = fraction(epoch_samples)
    if peer is None:
        return row, None
    comparison = {
        "peer_ms_samples": peer_ms,
        "peer_ms": statistics.median(peer_ms),
        "ratio_step_per_round": ratios,
        "ratio_step": statistics.median(ratios),
        "ratio_epoch_per_round": epoch_ratios,
        "ratio_epoch": statistics.median(epoch_ratios) if epoch_ratios else None,
    }
    return row, comparison


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    """The measurements as a fixed-width text table."""
    head = (f"{'preset':<7}{'stage':>6}{'batch':>6}{'size':>5}{'compile s':>10}{'step ms':>10}"
            f"{'K':>5}{'epoch ms':>10}{'chunk s':>9}{'GFLOP':>8}{'GFLOP/s':>9}{'matmul':>10}{'%mm':>6}"
            f"{'%mm ep':>7}{'XLA MiB':>9}{'peak MiB':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.preset:<7}{r.stage:>6}{r.batch:>6}{r.image_size:>5}{r.compile_s:>10.1f}{r.step_ms:>10.1f}"
            f"{_fmt(r.chunk, 'd'):>5}{_fmt(r.epoch_ms, '.1f'):>10}{_fmt(r.epoch_compile_s, '.1f'):>9}"
            f"{r.flops / 1e9:>8.1f}{r.gflops_per_s:>9.1f}{r.matmul_gflops_per_s:>10.1f}"
            f"{100 * r.matmul_fraction:>6.1f}{_fmt(None if r.epoch_matmul_fraction is None else 100 * r.epoch_matmul_fraction, '.1f'):>7}"
            f"{r.xla_mib:>9.0f}{r.peak_mib:>9.0f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="seed,fast,paper", help="comma-separated preset names")
    p.add_argument("--stages", default="1,2,3", help="comma-separated stage numbers")
    p.add_argument("--steps", type=int, default=3, help="timed repetitions per round (after warm-up)")
    p.add_argument("--epoch-stages", default="1",
                   help="stages whose EpochRunner chunk is timed too (compiling K unrolled steps is slow on "
                        "the CPU); 'all' or '' for none")
    p.add_argument("--quick", action="store_true",
                   help="presets seed,paper, stage I only, 2 steps, one peer round, no chunk timing")
    p.add_argument("--peer", metavar="PYTHON", help="interpreter with torch for the peer script")
    p.add_argument("--peer-script", type=Path, default=PEER_SCRIPT, help=f"default {PEER_SCRIPT}")
    p.add_argument("--peer-rounds", type=int, default=3, help="interleaved rounds peer/ours")
    p.add_argument("--peer-steps", type=int, default=3, help="timed steps per peer run (after its 3 warm-up)")
    p.add_argument("--ensemble", type=int, default=4, metavar="K",
                   help="also time an epoch chunk of K members against one model (0: skip)")
    p.add_argument("--ensemble-preset", default="fast", help="preset of the ensemble timing")
    p.add_argument("--loop-epochs", type=int, default=0, metavar="N",
                   help="also train N epochs of stage II per preset and print the loop's own work per epoch "
                        "(validation, checkpoints, logging: the stage's wall time less its wait on the steps)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every preset, e.g. --set model.compute_dtype=bfloat16 "
                        "(repeatable)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.stages, args.steps, args.epoch_stages, args.peer_rounds = "seed,paper", "1", 2, "", 1
        args.ensemble = 0
    args.presets = [s for s in args.presets.split(",") if s]
    args.stages = [int(s) for s in args.stages.split(",") if s]
    args.epoch_stages = [1, 2, 3] if args.epoch_stages == "all" else [int(s) for s in args.epoch_stages.split(",") if s]
    args.overrides = tuple(args.overrides)
    for name in args.presets:
        try:
            config_lib.override(config_lib.preset(name), list(args.overrides))
        except ConfigError as err:
            p.error(str(err))
    if args.peer and not args.peer_script.exists():
        p.error(f"--peer-script {args.peer_script} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the peer ratio, write JSON when asked."""
    args = parse_args(argv)
    presets = list(args.presets)
    if args.peer and PEER_PRESET not in presets:
        presets.insert(0, PEER_PRESET)
    peer = (lambda: run_peer(args.peer, args.peer_script, args.peer_steps)) if args.peer else None
    dataset = load_synthetic()
    # The peer suffers far more than XLA from other processes on the cores: record how busy the machine was.
    load_start = os.getloadavg()
    print(f"device {jax.devices()[0]}  backend {jax.default_backend()}  jax {jax.__version__}  "
          f"load average {load_start[0]:.2f}" + "".join(f"  --set {o}" for o in args.overrides), flush=True)
    print("\n".join(table([]).splitlines()[:1]), flush=True)
    rows: list[Row] = []
    comparison = None
    with tempfile.TemporaryDirectory() as workdir:
        for name in presets:
            trainer = make_trainer(name, dataset, Path(workdir), overrides=args.overrides)
            stages = list(args.stages)
            if args.peer and name == PEER_PRESET and PEER_STAGE not in stages:
                stages.insert(0, PEER_STAGE)
            for number in stages:
                bench = StageBench(trainer, number)
                is_peer_row = peer is not None and name == PEER_PRESET and number == PEER_STAGE
                row, found = measure(
                    bench, args.steps, number in args.epoch_stages,
                    peer if is_peer_row else None, args.peer_rounds if is_peer_row else 1,
                )
                comparison = found or comparison
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
                del bench  # frees its two copies of the states before the next stage compiles
            del trainer
        loops = [loop_cost(name, args.loop_epochs, dataset, Path(workdir), args.overrides)
                 for name in presets] if args.loop_epochs > 0 else []
        ensemble = (ensemble_cost(args.ensemble_preset, args.ensemble, args.stages, dataset, Path(workdir), args.steps,
                                 args.overrides)
                    if args.ensemble > 1 else None)
    load_end = os.getloadavg()
    print(f"\nload average at the end {load_end[0]:.2f}")
    print(table(rows))
    if comparison is not None:
        print(f"\npeer (eager PyTorch, {PEER_PRESET} stage I, batch {PEER_BATCH}): "
              f"{comparison['peer_ms']:.1f} ms/step; rounds {[round(x) for x in comparison['peer_ms_samples']]}")
        print(f"ours/peer, single jitted step:  {comparison['ratio_step']:.3f} "
              f"(per round {[round(x, 3) for x in comparison['ratio_step_per_round']]})")
        if comparison["ratio_epoch"] is not None:
            print(f"ours/peer, in-epoch chunk step: {comparison['ratio_epoch']:.3f} "
                  f"(per round {[round(x, 3) for x in comparison['ratio_epoch_per_round']]})")
    if args.json:
        result = {
            "device": str(jax.devices()[0]), "backend": jax.default_backend(), "jax": jax.__version__,
            "python": platform.python_version(), "argv": sys.argv[1:] if argv is None else argv,
            "load_average_start": load_start, "load_average_end": load_end,
            "rows": [dataclasses.asdict(r) for r in rows], "peer": comparison, "ensemble": ensemble, "loop": loops,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    # Compile times are part of the result: never load programs from a persistent cache.
    jax.config.update("jax_enable_compilation_cache", False)
    sys.exit(main())
