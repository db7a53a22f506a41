"""The examples run in their fast mode at small size and show the claim each exists to show."""

import importlib.util
import math
import pickle
import statistics
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_radam.rectification import r_t

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_scalars(directory):
    """All scalar series in the TensorBoard event files under ``directory``: {tag: [(step, value)]}."""
    series = {}
    for events in sorted(Path(directory).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault((str(events.parent.relative_to(directory)), tag), []).extend(
                (e.step, e.value) for e in accumulator.Scalars(tag)
            )
    return series


@pytest.mark.parametrize(
    ("name", "flags"),
    [
        ("variance_simulation", ["--trajectories", "--steps", "--beta2", "--mus", "--output-dir"]),
        (
            "warmup_study",
            [
                "--methods",
                "--seeds",
                "--steps",
                "--layers",
                "--d-model",
                "--lr",
                "--beta2",
                "--text-file",
                "--output-dir",
            ],
        ),
        ("lr_robustness", ["--methods", "--lrs", "--seeds", "--epochs", "--data-dir", "--output-dir"]),
        ("distortion_alarm", ["--output-dir", "--run", "--seeds", "--threshold", "--early-steps"]),
    ],
)
def test_example_help_lists_scaling_flags(name, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example(name).main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text


@pytest.mark.parametrize(
    ("name", "argv", "match"),
    [
        ("variance_simulation", ["--steps", "3"], "--steps must be >= 6"),
        ("variance_simulation", ["--beta2", "0.5"], "--beta2 must be in"),
        ("warmup_study", ["--d-model", "30", "--heads", "4"], "must be a multiple of --heads"),
        ("warmup_study", ["--methods", "sgd"], "invalid choice: 'sgd'"),
        ("lr_robustness", ["--lrs", "0.1", "0"], "--lrs must be positive, got 0.0"),
        ("lr_robustness", ["--histogram-every", "-1"], "--histogram-every must be >= 0, got -1"),
        ("distortion_alarm", ["--threshold", "0"], "--threshold must be > 0, got 0.0"),
        ("distortion_alarm", ["--early-steps", "0"], "--early-steps must be >= 1, got 0"),
    ],
)
def test_example_rejects_invalid_flags(name, argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example(name).main(argv)
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ simulation
def test_variance_simulation_rectification_keeps_variance_flat(tmp_path):
    result = load_example("variance_simulation").main(["--trajectories", "2000", "--output-dir", str(tmp_path)])
    var_l, var_rl = result["var_l"], result["var_rl"]
    assert var_l.shape == (6, 6000)
    for i, mu in enumerate(result["mus"]):
        # Adam: the adaptive learning rate's variance falls by orders of magnitude after step 6
        assert var_l[i, 5] / var_l[i, -1] >= 100, mu
        # RAdam: from the first rectified step on, r_t l_t keeps about the variance it ends with
        rectified = var_rl[i, 5:]
        assert rectified.max() / rectified.min() <= (3.0 if mu <= 1 else 6.0), mu
        assert np.all(var_rl[i, :4] == 0)  # rho_t <= 4: r_t = 0
    assert "| mu " in result["table"]
    assert "Var[r_t l_t] t=6000" in result["table"]
    for name in ("variance_over_steps.png", "variance_over_rho.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    scalars = read_scalars(tmp_path)
    for mu in ("0", "10"):
        for tag, values in ((f"var_l_t/mu={mu}", var_l), (f"var_r_t_l_t/mu={mu}", var_rl)):
            steps = dict(scalars[(".", tag)])
            i = result["mus"].index(float(mu))
            assert steps[6] == pytest.approx(values[i, 5], rel=1e-6)
            assert steps[6000] == pytest.approx(values[i, -1], rel=1e-6)


# ---------------------------------------------------------------------------------------- lr robustness
def write_cifar_batches(directory, images_per_batch=4, seed=0):
    """A tiny CIFAR-10 python version: five training batches and a test batch of random images."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(images_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=images_per_batch).tolist()
        with open(directory / name, "wb") as f:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [b"x.png"] * images_per_batch,
                },
                f,
            )
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("point_at", ["batches", "parent"])
def test_load_cifar10_reads_python_batches(tmp_path, point_at):
    written = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    lr_robustness = load_example("lr_robustness")
    x_train, y_train, x_test, y_test = lr_robustness.load_cifar10(
        tmp_path / "cifar-10-batches-py" if point_at == "batches" else tmp_path
    )
    assert x_train.shape == (20, 3, 32, 32)
    assert x_test.shape == (4, 3, 32, 32)
    assert x_train.dtype == np.float32
    first, labels = written["data_batch_1"]
    np.testing.assert_array_equal(x_train[:4] * 255.0, first.reshape(4, 3, 32, 32).astype(np.float32))
    assert y_train[:4].tolist() == labels
    assert y_test.tolist() == written["test_batch"][1]


def test_load_cifar10_names_missing_batches(tmp_path):
    write_cifar_batches(tmp_path / "cifar")
    (tmp_path / "cifar" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="lacks the CIFAR-10 python batches data_batch_3"):
        load_example("lr_robustness").load_cifar10(tmp_path / "cifar")


def test_load_cifar10_rejects_wrong_layout(tmp_path):
    write_cifar_batches(tmp_path / "cifar")
    with open(tmp_path / "cifar" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"data of shape \(2, 100\)"):
        load_example("lr_robustness").load_cifar10(tmp_path / "cifar")


def test_lr_robustness_trains_on_cifar_format_data(tmp_path):
    write_cifar_batches(tmp_path / "cifar", images_per_batch=8)
    result = load_example("lr_robustness").main(
        [
            "--data-dir",
            str(tmp_path / "cifar"),
            "--methods",
            "radam",
            "--lrs",
            "0.01",
            "--seeds",
            "0",
            "--width",
            "4",
            "--log-every",
            "1",
            "--histogram-every",
            "4",
            "--batch-size",
            "1",
            "--epochs",
            "2",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert result["dataset"] == "CIFAR-10"
    assert 0.0 <= result["accuracy"]["radam"][0.01][0] <= 1.0
    assert (tmp_path / "out" / "accuracy_vs_lr.png").is_file()
    scalars = read_scalars(tmp_path / "out")
    assert ("tensorboard/radam_lr0.01/seed0", "test/accuracy") in scalars
    histograms = EventAccumulator(str(tmp_path / "out" / "tensorboard" / "radam_lr0.01" / "seed0"), {"histograms": 0})
    histograms.Reload()
    logged = [s for s in range(80) if s < 50 or s % 4 == 0]  # 80 steps (40 images, batch 1): the monitor's schedule
    assert [event.step for event in histograms.Histograms("grad/log10_abs")] == logged


class ParameterTrace(L.Callback):
    """The parameters and the loss on the whole training set, before the first step and after every step."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.parameters: list[list[torch.Tensor]] = []
        self.losses: list[float] = []

    def record(self, module: L.LightningModule) -> None:
        self.parameters.append([p.detach().clone() for p in module.parameters()])
        with torch.no_grad():
            self.losses.append(torch.nn.functional.cross_entropy(module.net(self.x), self.y).item())

    def on_train_start(self, trainer, pl_module) -> None:
        self.record(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.record(pl_module)


def first_steps(lr_robustness, method, lr, steps, seed=0):
    """The example's CNN, digits, batch size and optimizer recipe, trained for ``steps`` optimizer steps; its trace."""
    defaults = lr_robustness.parse_args([])
    x_train, y_train, x_test, _ = lr_robustness.load_digits_split()
    x_train, _ = lr_robustness.standardise(x_train, x_test)
    y_train = torch.from_numpy(y_train)
    L.seed_everything(seed, verbose=False)
    net = lr_robustness.make_cnn(x_train.shape[1], x_train.shape[2], defaults.width)
    model = lr_robustness.Classifier(net, lr_robustness.make_optimizer_factory(method, lr))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train, y_train),
        batch_size=defaults.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    trace = ParameterTrace(x_train, y_train)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, callbacks=[trace], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    return trace


def largest_move(after, before):
    """max over every parameter element of |after - before|."""
    return max((a - b).abs().max().item() for a, b in zip(after, before, strict=True))


def adam_ratio_bound(t, beta1=0.9, beta2=0.999):
    """Upper bound on |m_hat_t| / sqrt(v_hat_t) at step t, whatever the gradients.

    Cauchy-Schwarz on m_t = (1 - b1) sum_k b1^k g_(t-k) against v_t = (1 - b2) sum_k b2^k g_(t-k)^2 gives
    |m_t| <= (1 - b1) / sqrt(1 - b2) * sqrt(sum_(k<t) (b1^2 / b2)^k) * sqrt(v_t); then bias-correct both.
    """
    geometric = sum((beta1 * beta1 / beta2) ** k for k in range(t))
    return (1 - beta1) / (1 - beta1**t) * math.sqrt((1 - beta2**t) / (1 - beta2) * geometric)


@pytest.mark.parametrize(("lr", "blow_up"), [(0.1, 10.0), (0.03, 2.0)])
def test_lr_robustness_adam_first_step_moves_every_weight_by_lr_radam_waits_then_scales_by_r_t(lr, blow_up):
    # Why RAdam tolerates learning rates at which Adam collapses, checked on the example's own model, data
    # and optimizer recipes. Deterministic up to round-off, so it holds whichever kernels the CPU runs,
    # unlike the accuracies these runs end with (docs/results.md). At step 1, m_hat / sqrt(v_hat) =
    # g / |g|: Adam moves every weight with a nonzero gradient by lr, whatever the gradient's size.
    # RAdam makes no update while rho_t <= 5 (steps 1-5), then lr * r_t * m_hat / sqrt(v_hat) with
    # r_6 = 0.026: its first ten steps together move no weight by a fifth of Adam's first step.
    lr_robustness = load_example("lr_robustness")
    steps = 10
    adam = first_steps(lr_robustness, "adam", lr, steps)
    first = torch.cat([(a - b).abs().flatten() for a, b in zip(adam.parameters[1], adam.parameters[0], strict=True)])
    assert first.max().item() <= lr * (1 + 1e-5)
    assert (first >= 0.99 * lr).float().mean().item() > 0.75  # 0.83-0.88 on seeds 0-2: the rest have g = 0
    assert adam.losses[1] > blow_up * adam.losses[0]  # measured at seeds 0-2: x21-30 at lr 0.1, x2.7-4.2 at 0.03

    radam = first_steps(lr_robustness, "radam", lr, steps)
    for t in range(1, 6):
        assert all(torch.equal(a, b) for a, b in zip(radam.parameters[t], radam.parameters[0], strict=True)), t
    bounds = {t: lr * r_t(t, 0.999) * adam_ratio_bound(t) for t in range(6, steps + 1)}
    for t, bound in bounds.items():
        assert 0.0 < largest_move(radam.parameters[t], radam.parameters[t - 1]) <= bound * (1 + 1e-5), t
    assert largest_move(radam.parameters[steps], radam.parameters[0]) <= sum(bounds.values()) * (1 + 1e-5)
    assert sum(bounds.values()) < 0.2 * lr  # against Adam's single first step of lr
    assert radam.losses[steps] < radam.losses[0]  # while Adam's first step multiplied the loss


def test_lr_robustness_radam_keeps_its_accuracy_at_large_learning_rates(tmp_path):
    # Accuracies at large learning rates depend on the CPU's floating-point kernels seed by seed (the
    # runs are chaotic), so only means over seeds are asserted, with margins from the spread measured
    # across kernel families (docs/results.md): RAdam's mean at lr 0.1 was 91.6-97.6 % (worst seed 82.5),
    # at lr 0.03 98.6-99.6 % (worst seed 96.7), against 99.1 % at lr 0.01.
    result = load_example("lr_robustness").main(
        ["--methods", "radam", "--lrs", "0.1", "0.03", "--output-dir", str(tmp_path)]
    )
    accuracy = result["accuracy"]["radam"]
    assert result["dataset"] == "digits"
    assert len(accuracy[0.1]) == 3
    assert statistics.fmean(accuracy[0.1]) > 0.85
    assert statistics.fmean(accuracy[0.03]) > 0.95
    assert "kernels: ATen" in result["machine"]
    assert (tmp_path / "accuracy_vs_lr.png").stat().st_size > 10_000


# --------------------------------------------------------------------------------------- warmup study
def test_warmup_study_adam_without_warmup_stalls_where_warmed_up_adam_trains(tmp_path):
    # The robust part of the measured default table, at half its steps and two of its three seeds:
    # Adam without warmup stays at the unigram entropy while Adam with the untuned 2 / (1 - b2) warmup
    # learns. Single runs end a little differently with every kernel family (docs/results.md), so
    # only means over the seeds are asserted. Measured at these 200 steps in kernel families A, B, C, E
    # and G, seeds 0-2: Adam 3.24-3.28 nats (stall line 3.00), the warmup 2.55-2.61. (RAdam is not
    # asserted: at 200 steps its seed 1 stalled in family C only, and it stalls on one seed of three
    # in the default table.)
    study = load_example("warmup_study")
    result = study.main(
        [
            "--methods",
            "adam",
            "adam_untuned_warmup",
            "--seeds",
            "0",
            "1",
            "--steps",
            "200",
            "--output-dir",
            str(tmp_path),
        ]
    )
    train, val = result["train"], result["val"]
    stall = result["unigram_entropy"] - study.STALL_MARGIN
    assert statistics.fmean(train["adam"]) > stall
    assert statistics.fmean(train["adam_untuned_warmup"]) < stall - 0.2
    assert statistics.fmean(val["adam_untuned_warmup"]) < statistics.fmean(val["adam"]) - 0.5
    assert "kernels: ATen" in result["machine"]
    scalars = read_scalars(tmp_path)
    run = "tensorboard/adam/seed0"
    assert max(step for step, _ in scalars[(run, "train/loss")]) >= 195
    assert (run, "radam/group0/r_t") in scalars  # RectificationMonitor on every run
    accumulator = EventAccumulator(str(tmp_path / run), size_guidance={"histograms": 0})
    accumulator.Reload()
    histogram_steps = [event.step for event in accumulator.Histograms("grad/log10_abs")]
    assert histogram_steps[:3] == [0, 1, 2]  # the first updates, where the distribution distorts
    assert (tmp_path / "gradient_histograms.png").stat().st_size > 10_000
    # The paper's Figure 2 effect, read back from TensorBoard: without warmup the gradient magnitudes
    # collapse within 20 steps (median log10|g| from -3 to -6.6 to -7.2 measured), with warmup they
    # barely move (-3 to -4.0 to -4.2).
    edges = np.linspace(-12.0, 2.0, 141)
    medians = {}
    for method in ("adam", "adam_untuned_warmup"):
        for seed in (0, 1):
            steps, fractions = study.read_gradient_histograms(
                tmp_path / "tensorboard" / method / f"seed{seed}", 20, edges
            )
            assert steps[0] == 0
            assert steps[-1] == 20
            medians[method, seed] = [
                edges[1:][np.searchsorted(np.cumsum(f), 0.5)] for f in (fractions[0], fractions[-1])
            ]
    for seed in (0, 1):  # before the first update: the same model and batch, so the same gradients
        assert medians["adam", seed][0] == pytest.approx(medians["adam_untuned_warmup", seed][0])
    collapse = statistics.fmean(medians["adam", seed][0] - medians["adam", seed][1] for seed in (0, 1))
    gap = statistics.fmean(medians["adam_untuned_warmup", seed][1] - medians["adam", seed][1] for seed in (0, 1))
    assert collapse > 3.0
    assert gap > 2.0
    # The alarm's score over its window (steps 0-29), as logged: measured at 400 steps, seeds 0-2, Adam 3.94-4.31
    # decades (threshold 3), the untuned warmup <= 1.59 (docs/monitoring.md); the first 30 steps do not depend on
    # the run's length. Means over the seeds, as above.
    early_max = {
        method: statistics.fmean(
            max(value for step, value in scalars[(f"tensorboard/{method}/seed{seed}", "grad/distortion")] if step < 30)
            for seed in (0, 1)
        )
        for method in ("adam", "adam_untuned_warmup")
    }
    assert early_max["adam"] > 3.0 + 0.3
    assert early_max["adam_untuned_warmup"] < 3.0 - 1.0
