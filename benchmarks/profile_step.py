"""Where a training step's time goes: the compiled operations of one (preset, stage) step, from a trace.

It compiles the stage's step as benchmarks/bench.py does, traces a few calls with jax.profiler, reads the
trace back (jax.profiler.ProfileData) and joins each traced operation to its instruction in the compiled
program, which says what it computes:
  convolution   XLA convolutions, alone or inside a fusion (on the CPU mostly XNNPACK "ynn" fusions)
  dot           matrix products (the dense layers), alone or fused
  copy/layout   copies and transposes
  other         element-wise fusions and reductions: BatchNorm, activations, losses, the optimiser
For each kind: milliseconds of operation time per step (summed over the threads that ran them), and for
convolutions and dots together XLA's flop count of the step divided by their time. It also prints how
much of the traced time 0, 1, 2, ... operations were running at once, and the costliest operations.

XLA's CPU runtime runs independent operations side by side, one per thread, so with several cores the
operation times add up to more than the wall time. Pinned to one core, operation time is wall time and
the matmul rate is that core's: the rate of the arithmetic then says how close it runs to the core's
limit. CPU only (the trace's operation events are read from XLA's CPU threads).

    .venv/bin/python benchmarks/profile_step.py --preset seed --stage 1
    taskset -c 0 .venv/bin/python benchmarks/profile_step.py --preset seed --stage 1    # one core
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import re
import sys
import tempfile
import time
from pathlib import Path

import jax

# bench.py, beside this file, also puts the repository on sys.path for the package imports below.
from bench import StageBench, make_trainer, matmul_rate
from vaegan_jax import config as config_lib
from vaegan_jax.data import load_synthetic
from vaegan_jax.errors import ConfigError

KINDS = ("convolution", "dot", "copy/layout", "other")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?([\w.\-]+) = (\S+) (.*)$")


@dataclasses.dataclass(frozen=True)
class Operation:
    """One instruction of the compiled program: what kind of work it is and a short description."""

    kind: str
    description: str


def _kind_of(text: str) -> str | None:
    """The arithmetic kind an instruction's text computes directly, if any."""
    if re.search(r"\bconvolution\(", text):
        return "convolution"
    if re.search(r"\bdot\(", text):
        return "dot"
    return None


def operations(hlo_text: str) -> dict[str, Operation]:
    """Every instruction of a compiled module's text, keyed by name, with its kind and a description.

    A fusion takes the kind of the convolution or dot it contains (searched through nested fusions);
    the description is the result shape, and a convolution's window.
    """
    computations: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    current = ""
    for line in hlo_text.splitlines():
        if not line.startswith(" "):
            match = _COMPUTATION.match(line)
            current = match.group(1) if match else current
            continue
        match = _INSTRUCTION.match(line)
        if match:
            computations[current].append(match.groups())

    def arithmetic(shape: str, text: str, seen: frozenset) -> Operation | None:
        kind = _kind_of(text)
        if kind:
            return Operation(kind, f"{shape} {_window(text)}".strip())
        called = re.search(r"calls=%?([\w.\-]+)", text)
        if called and called.group(1) not in seen:
            for _, inner_shape, inner_text in computations.get(called.group(1), ()):
                found = arithmetic(inner_shape, inner_text, seen | {called.group(1)})
                if found:
                    return found
        return None

    result = {}
    for computation, instructions in computations.items():
        for name, shape, text in instructions:
            found = arithmetic(shape, text, frozenset({computation}))
            if found is None:
                layout = re.match(r"(copy|transpose)", name) or re.match(r"(copy|transpose)\(", text)
                found = Operation("copy/layout" if layout else "other", shape)
            result[name] = found
    return result


def _window(text: str) -> str:
    match = re.search(r"window=\{[^}]*\}", text)
    return match.group(0) if match else ""


@dataclasses.dataclass(frozen=True)
class Event:
    """One traced run of an operation on a thread."""

    name: str
    thread: str
    start_ns: int
    duration_ns: int


def traced_operations(trace_dir: Path, known: dict[str, Operation]) -> list[Event]:
    """The events of a trace whose names are instructions of the compiled program."""
    files = sorted(trace_dir.rglob("*.xplane.pb"))
    if not files:
        raise SystemExit(f"error: no trace written under {trace_dir}")
    data = jax.profiler.ProfileData.from_file(str(files[-1]))
    return [
        Event(event.name, line.name, event.start_ns, event.duration_ns)
        for plane in data.planes for line in plane.lines for event in line.events
        if event.name in known
    ]


def concurrency(events: list[Event]) -> dict[int, float]:
    """Fraction of the traced span during which k operations were running, for each k."""
    edges = sorted([(e.start_ns, 1) for e in events] + [(e.start_ns + e.duration_ns, -1) for e in events])
    if not edges:
        return {}
    span = edges[-1][0] - edges[0][0]
    shares: dict[int, float] = collections.defaultdict(float)
    running, last = 0, edges[0][0]
    for time_ns, change in edges:
        shares[running] += (time_ns - last) / span
        running, last = running + change, time_ns
    return dict(sorted(shares.items()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="seed", help="preset name (default seed)")
    p.add_argument("--stage", type=int, default=1, choices=(1, 2, 3), help="stage number (default 1)")
    p.add_argument("--steps", type=int, default=3, help="traced steps, after two untraced ones")
    p.add_argument("--top", type=int, default=15, help="how many of the costliest operations to list")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set model.compute_dtype=bfloat16 (repeatable)")
    args = p.parse_args(argv)
    try:
        config_lib.override(config_lib.preset(args.preset), list(args.overrides))
    except ConfigError as err:
        p.error(str(err))
    if args.steps < 1:
        p.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Trace the step, print the time per kind of operation, the concurrency and the costliest operations."""
    args = parse_args(argv)
    if jax.default_backend() != "cpu":
        print(f"error: profile_step reads XLA's CPU threads; this is {jax.default_backend()}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as workdir:
        trainer = make_trainer(args.preset, load_synthetic(), Path(workdir), overrides=tuple(args.overrides))
        stage = StageBench(trainer, args.stage)
        stage.compile_step()
        known = operations(stage.step.as_text())
        stage.time_step(2)
        matmul = matmul_rate()
        # Keys made before tracing: the trace then holds the step's program and nothing else.
        keys = list(jax.random.split(jax.random.key(3), args.steps))
        trace_dir = Path(workdir) / "trace"
        jax.profiler.start_trace(str(trace_dir))
        start = time.perf_counter()
        for key in keys:
            stage.step_states, metrics = stage.step(stage.step_states, stage.batch, key)
        jax.block_until_ready((stage.step_states, metrics))
        wall_ms = (time.perf_counter() - start) * 1e3 / args.steps
        jax.profiler.stop_trace()
        events = traced_operations(trace_dir, known)
    if not events:
        print("error: the trace holds no operation of the compiled step", file=sys.stderr)
        return 1
    per_step = 1e-6 / args.steps
    by_kind: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.Counter()
    by_name: dict[str, float] = collections.defaultdict(float)
    per_thread: dict[str, float] = collections.defaultdict(float)
    for event in events:
        ms = event.duration_ns * per_step
        by_kind[known[event.name].kind] += ms
        count[known[event.name].kind] += 1
        by_name[event.name] += ms
        per_thread[event.thread] += ms
    total = sum(by_kind.values())
    flops = stage.flops
    print(f"{args.preset} stage {args.stage}: {wall_ms:.1f} ms per step (wall, mean of {args.steps} traced calls), "
          f"XLA's flop count {flops / 1e9:.1f} GFLOP per step; float32 matmul {matmul:.1f} GFLOP/s")
    print("operation time per thread, ms per step: "
          + ", ".join(f"{ms:.1f}" for ms in sorted(per_thread.values(), reverse=True)))
    print(f"\n{'kind':<14}{'op ms/step':>11}{'share':>8}{'ops/step':>10}")
    for kind in KINDS:
        print(f"{kind:<14}{by_kind[kind]:>11.1f}{by_kind[kind] / total:>8.1%}{count[kind] / args.steps:>10.0f}")
    print(f"{'all':<14}{total:>11.1f}{1:>8.1%}{len(events) / args.steps:>10.0f}")
    arithmetic_ms = by_kind["convolution"] + by_kind["dot"]
    rate = flops / (arithmetic_ms * 1e-3) / 1e9
    print(f"\nconvolutions and dots: {flops / 1e9:.1f} GFLOP in {arithmetic_ms:.1f} ms of operation time, "
          f"{rate:.1f} GFLOP/s per running operation ({rate / matmul:.1%} of the matmul rate)")
    shares = concurrency(events)
    print("operations running at once, share of the traced time: "
          + ", ".join(f"{k}: {share:.1%}" for k, share in shares.items() if share >= 0.0005))
    print(f"\n{'op ms/step':>10}  {'kind':<12} operation")
    for name, ms in sorted(by_name.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{ms:>10.1f}  {known[name].kind:<12} {name}: {known[name].description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
