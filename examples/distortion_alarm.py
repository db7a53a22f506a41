"""Does the distortion alarm fire on the runs that need warmup, and only on them? How its defaults were chosen.

Replays the gradient histograms (``grad/log10_abs``, at every step of the early phase at least) of three
examples through :class:`~lightning_radam.callbacks.distortion.DistortionAlarm` and prints:

1. the warmup study, per arm and seed, and Adam with linear warmups too short for this model
   (``adam_warmup`` over 10, 25 and 50 steps instead of 200): whether the run stalled (the study's own
   rule: final training loss within 0.25 nats of the unigram entropy), whether the alarm fired and at
   which step, and the largest score in the early phase;
2. the false alarms on the other examples (the learning-rate study on the digits, the quick start):
   runs that trained (test or validation accuracy above ``--trained-accuracy``) and alarmed;
3. how the defaults were chosen: for each candidate score (the downward distortion the alarm uses,
   the 1-Wasserstein distance, the fall of the median; from step 0, or from the first 3 steps pooled)
   and each early-phase length, the largest score of any run that trained against the smallest
   early maximum of the stalled Adam runs without warmup (``adam``, ``adam_eps``), the threshold
   halfway between, the steps at which those runs would cross it, and how many of all the stalled
   runs (short warmups, Adam-2k and RAdam included) cross it within the early phase.

The histograms are read back from the TensorBoard event files exactly: the monitor writes the
occupied range of its 1024 buckets with log10 upper edges as bucket limits, so each step's counts
are recovered bucket by bucket. The event files come from these commands (``--run`` runs them first,
the longest part; ``--output-dir`` is where they write and where this script reads)::

    python examples/warmup_study.py --methods adam adam_warmup adam_untuned_warmup adam_untuned_exp_warmup \\
        adam_2k adam_eps radam_sgd radam --histogram-every 1 --log-every 1 --output-dir OUT/warmup_study
    python examples/warmup_study.py --methods adam_warmup --warmup-steps W --histogram-every 1 --log-every 1 \\
        --output-dir OUT/warmup_steps_W                                          # for W in 10 25 50
    python examples/lr_robustness.py --methods sgd adam radam radam_sgd --lrs 0.1 0.03 0.01 0.003 0.001 \\
        --histogram-every 1 --output-dir OUT/lr_robustness
    python examples/quickstart.py --seed K --log-dir OUT/quickstart/seedK      # for K in 0 1 2

(the quick start keeps its monitor's default schedule: every step of the early phase, then every 10).

``--log-every 1`` makes the warmup study log its training loss at every step, so that "stalled" is
computed from the same losses as the study's table.

Example:
    python examples/distortion_alarm.py --run --output-dir runs/distortion_alarm
    python examples/distortion_alarm.py --output-dir runs/distortion_alarm --threshold 2.5 --early-steps 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lr_robustness
import quickstart
import warmup_study
from _common import machine_line, markdown_table, output_dir

from lightning_radam.callbacks import bucket_edges
from lightning_radam.callbacks.distortion import (
    DEFAULT_EARLY_STEPS,
    DEFAULT_THRESHOLD,
    DistortionAlarm,
    distortion,
    quantiles,
    wasserstein_distance,
)

TAG = "grad/log10_abs"
STUDY_METHODS = warmup_study.METHODS  # every arm, adam_untuned_exp_warmup included
ADAM_WITHOUT_WARMUP = ("adam", "adam_eps")  # the arms the alarm must catch when they stall
SHORT_WARMUPS = (10, 25, 50)  # adam_warmup's length in steps, in runs of their own (the study's default is 200)
LR_METHODS = lr_robustness.METHODS
LRS = (0.1, 0.03, 0.01, 0.003, 0.001)
WINDOWS = (10, 20, 30, 40, 50)  # early-phase lengths compared
LOWER, UPPER = (np.log10(edges) for edges in bucket_edges())


class Run(NamedTuple):
    """One training run read back: its histogram rows per step and whether it trained."""

    group: str  # "warmup_study", "lr_robustness" or "quickstart"
    arm: str  # method (with its lr for the learning-rate study)
    seed: int
    steps: np.ndarray
    counts: np.ndarray  # (steps, 1024) bucket counts
    trained: bool
    outcome: str  # the number "trained" was decided on


# ------------------------------------------------------------------------------------------------ reading
def read_run(directory: Path) -> tuple[np.ndarray, np.ndarray, dict[str, list[tuple[int, float]]]]:
    """``(steps, counts, scalars)`` of one run directory: the 1024-bucket rows of ``grad/log10_abs`` per step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"histograms": 0, "scalars": 0})
    accumulator.Reload()
    rows: dict[int, np.ndarray] = {}
    for event in accumulator.Histograms(TAG):
        limits = np.asarray(event.histogram_value.bucket_limit)
        index = np.searchsorted(UPPER, limits)
        if not np.array_equal(UPPER[np.minimum(index, UPPER.size - 1)], limits):
            raise ValueError(f"{directory}: the bucket limits of {TAG} at step {event.step} are not the monitor's")
        row = np.zeros(UPPER.size, dtype=np.int64)
        row[index] = np.asarray(event.histogram_value.bucket, dtype=np.int64)
        rows[event.step] = row
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    steps = np.array(sorted(rows), dtype=np.int64)
    return steps, np.array([rows[s] for s in steps]).reshape(len(steps), UPPER.size), scalars


def read_warmup_study(directory: Path, stall_loss: float, methods: Sequence[str], label: str = "") -> list[Run]:
    runs = []
    for method in methods:
        for run_dir in sorted((directory / "tensorboard" / method).glob("seed*")):
            steps, counts, scalars = read_run(run_dir)
            losses = scalars["train/loss"]
            tail = max(1, (losses[-1][0] + 1) // 10)  # the study's "last 10% of steps"
            final = statistics.fmean(v for s, v in losses if s > losses[-1][0] - tail)
            seed = int(run_dir.name[4:])
            runs.append(Run("warmup_study", method + label, seed, steps, counts, final <= stall_loss, f"{final:.3f}"))
    return runs


def read_accuracy_runs(group: str, run_dirs: list[tuple[str, int, Path]], tag: str, trained_accuracy: float):
    runs = []
    for arm, seed, run_dir in run_dirs:
        steps, counts, scalars = read_run(run_dir)
        accuracy = scalars[tag][-1][1]
        runs.append(Run(group, arm, seed, steps, counts, accuracy > trained_accuracy, f"{100 * accuracy:.1f}%"))
    return runs


def lr_runs(directory: Path) -> list[tuple[str, int, Path]]:
    found = []
    for method in LR_METHODS:
        for lr in LRS:
            for run_dir in sorted((directory / "tensorboard" / f"{method}_lr{lr:g}").glob("seed*")):
                found.append((f"{method} lr {lr:g}", int(run_dir.name[4:]), run_dir))
    return found


def quickstart_runs(directory: Path) -> list[tuple[str, int, Path]]:
    return [
        ("quickstart", int(seed_dir.name[4:]), version)
        for seed_dir in sorted(directory.glob("seed*"))
        for version in sorted((seed_dir / "quickstart").glob("version_*"))
    ]


# -------------------------------------------------------------------------------------------------- replay
def replay(run: Run, threshold: float, early_steps: int) -> tuple[DistortionAlarm, float]:
    """The alarm fed every logged step of ``run`` in order; and its largest score at steps < early_steps."""
    alarm = DistortionAlarm(LOWER, UPPER, threshold=threshold, early_steps=early_steps)
    scores = [alarm.update(int(step), row) for step, row in zip(run.steps, run.counts, strict=True)]
    early = [s for step, s in zip(run.steps, scores, strict=True) if step < early_steps and not np.isnan(s)]
    return alarm, max(early, default=float("nan"))


def candidate_scores(run: Run, pooled: int) -> dict[str, np.ndarray]:
    """Each candidate score per step of ``run``, from the first ``pooled`` steps' summed counts as reference."""
    reference = run.counts[:pooled].sum(axis=0)
    median = quantiles(np.vstack([reference, run.counts]), LOWER, UPPER, q=(0.5,))[:, 0]
    return {
        "distortion (downward W1)": distortion(run.counts, reference, LOWER, UPPER),
        "1-Wasserstein": wasserstein_distance(run.counts, reference, LOWER, UPPER),
        "median fall": median[0] - median[1:],
    }


def candidate_table(healthy: list[Run], collapsing: list[Run], stalled: list[Run]) -> str:
    """Per candidate score, reference and early-phase length: how well the runs that trained and the stalled
    Adam runs without warmup separate, and how many of all stalled runs the halfway threshold catches."""
    rows = []
    for pooled in (1, 3):
        everyone = {id(run): run for run in healthy + collapsing + stalled}.values()
        scores = {id(run): candidate_scores(run, pooled) for run in everyone}
        for name in scores[id(collapsing[0])]:
            for window in WINDOWS:
                early_max = {id(run): float(np.nanmax(scores[id(run)][name][run.steps < window])) for run in everyone}
                worst = max(healthy, key=lambda run: early_max[id(run)])
                weakest = min(early_max[id(run)] for run in collapsing)
                middle = (early_max[id(worst)] + weakest) / 2
                crossings = [
                    next((int(s) for s, v in zip(run.steps, scores[id(run)][name], strict=True) if v >= middle), "-")
                    for run in collapsing
                ]
                rows.append(
                    [
                        name,
                        "step 0" if pooled == 1 else f"steps 0-{pooled - 1} pooled",
                        window,
                        f"{early_max[id(worst)]:.2f} ({worst.group} {worst.arm} seed {worst.seed})",
                        f"{weakest:.2f}",
                        f"{weakest - early_max[id(worst)]:.2f}",
                        f"{middle:.2f}",
                        " ".join(map(str, crossings)),
                        f"{sum(early_max[id(run)] >= middle for run in stalled)}/{len(stalled)}",
                    ]
                )
    header = [
        "score",
        "reference",
        "steps <",
        "max of the runs that trained",
        "min of the stalled Adam runs",
        "gap",
        "halfway",
        "stalled Adam runs cross halfway at step",
        "stalled runs over halfway",
    ]
    return markdown_table(header, rows)


# ------------------------------------------------------------------------------------------------- running
def run_examples(directory: Path, seeds: Sequence[int]) -> None:
    """Run the three examples with histograms at every step into ``directory`` (the commands of the docstring)."""
    seed_flags = ["--seeds", *map(str, seeds)]
    every_step = ["--histogram-every", "1", "--log-every", "1", *seed_flags]
    warmup_study.main(["--methods", *STUDY_METHODS, *every_step, "--output-dir", str(directory / "warmup_study")])
    for steps in SHORT_WARMUPS:
        warmup_study.main(
            ["--methods", "adam_warmup", "--warmup-steps", str(steps), *every_step]
            + ["--output-dir", str(directory / f"warmup_steps_{steps}")]
        )
    lr_robustness.main(
        ["--methods", *LR_METHODS, "--lrs", *map(str, LRS), "--histogram-every", "1", *seed_flags]
        + ["--output-dir", str(directory / "lr_robustness")]
    )
    for seed in seeds:
        quickstart.main(["--seed", str(seed), "--log-dir", str(directory / "quickstart" / f"seed{seed}")])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--output-dir", default="runs/distortion_alarm", help="where the examples' events are")
    parser.add_argument("--run", action="store_true", help="run the three examples first (about 15 min)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the examples, with --run")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="the alarm's threshold (decades)")
    parser.add_argument("--early-steps", type=int, default=DEFAULT_EARLY_STEPS, help="the alarm's early phase")
    parser.add_argument(
        "--trained-accuracy", type=float, default=0.5, help="digits runs above this accuracy count as trained"
    )
    args = parser.parse_args(argv)
    if not args.threshold > 0:
        parser.error(f"--threshold must be > 0, got {args.threshold}")
    if args.early_steps < 1:
        parser.error(f"--early-steps must be >= 1, got {args.early_steps}")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Replay the examples' histograms through the alarm; returns the tables and the runs (used by the tests)."""
    args = parse_args(argv)
    directory = output_dir(args.output_dir)
    if args.run:
        run_examples(directory, args.seeds)
    data = warmup_study.CharData(warmup_study.load_text(None))
    stall_loss = data.unigram_entropy - warmup_study.STALL_MARGIN
    study = read_warmup_study(directory / "warmup_study", stall_loss, STUDY_METHODS)
    for steps in SHORT_WARMUPS:
        study += read_warmup_study(directory / f"warmup_steps_{steps}", stall_loss, ["adam_warmup"], f" {steps} steps")
    others = read_accuracy_runs(
        "lr_robustness", lr_runs(directory / "lr_robustness"), "test/accuracy", args.trained_accuracy
    ) + read_accuracy_runs(
        "quickstart", quickstart_runs(directory / "quickstart"), "val/accuracy", args.trained_accuracy
    )
    if not study:
        raise SystemExit(f"No warmup-study runs under {directory / 'warmup_study'}: run with --run first")

    alarms = {id(run): replay(run, args.threshold, args.early_steps) for run in study + others}
    study_rows = [
        [
            run.arm,
            run.seed,
            run.outcome,
            "yes" if not run.trained else "no",
            "yes" if alarms[id(run)][0].alarm_step is not None else "no",
            alarms[id(run)][0].alarm_step if alarms[id(run)][0].alarm_step is not None else "-",
            f"{alarms[id(run)][1]:.2f}",
        ]
        for run in study
    ]
    header = ["arm", "seed", "final train loss", "stalled", "alarmed", "alarm step"]
    study_table = markdown_table(header + [f"max score (steps < {args.early_steps})"], study_rows)
    by_arm: dict[tuple[str, str], list[Run]] = {}
    for run in others:
        by_arm.setdefault((run.group, run.arm), []).append(run)
    other_rows = []
    for (group, arm), runs in by_arm.items():
        fired = [run for run in runs if alarms[id(run)][0].alarm_step is not None]
        other_rows.append(
            [
                group,
                arm,
                " ".join(run.outcome for run in runs),
                f"{sum(run.trained for run in runs)}/{len(runs)}",
                f"{len(fired)}/{len(runs)}",
                f"{sum(run.trained for run in fired)}",
                f"{max(alarms[id(run)][1] for run in runs):.2f}",
            ]
        )
    other_table = markdown_table(
        ["example", "arm", "accuracy per seed", "trained", "alarmed", "false alarms", "max score"], other_rows
    )
    collapsing = [run for run in study if run.arm in ADAM_WITHOUT_WARMUP and not run.trained]
    healthy = [run for run in study + others if run.trained]
    caught = [run for run in collapsing if (alarms[id(run)][0].alarm_step or 10**9) < 40]
    false_alarms = [run for run in healthy if alarms[id(run)][0].alarm_step is not None]
    summary = (
        f"stalled Adam-without-warmup runs ({', '.join(ADAM_WITHOUT_WARMUP)}) alarmed within 40 steps: "
        f"{len(caught)}/{len(collapsing)}; runs that trained and alarmed: {len(false_alarms)}/{len(healthy)}"
    )
    stalled = [run for run in study if not run.trained]
    choice = candidate_table(healthy, collapsing, stalled) if collapsing and healthy else ""
    print(f"DistortionAlarm(threshold={args.threshold:g}, early_steps={args.early_steps}); events in {directory}")
    print(machine_line())
    print(study_table, other_table, summary, choice, sep="\n\n")
    return {
        "study_table": study_table,
        "other_table": other_table,
        "summary": summary,
        "candidates": choice,
        "runs": study + others,
        "alarm_steps": {(run.group, run.arm, run.seed): alarms[id(run)][0].alarm_step for run in study + others},
    }


if __name__ == "__main__":
    main()
