"""The examples run in their fast mode at small size and show the claim each exists to show."""

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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
    "name, flags",
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
    "name, argv, match",
    [
        ("variance_simulation", ["--steps", "3"], "--steps must be >= 6"),
        ("variance_simulation", ["--beta2", "0.5"], "--beta2 must be in"),
        ("warmup_study", ["--d-model", "30", "--heads", "4"], "must be a multiple of --heads"),
        ("warmup_study", ["--methods", "sgd"], "invalid choice: 'sgd'"),
        ("lr_robustness", ["--lrs", "0.1", "0"], "--lrs must be positive, got 0.0"),
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
    assert "| mu " in result["table"] and "Var[r_t l_t] t=6000" in result["table"]
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
    assert x_train.shape == (20, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
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
            "--epochs",
            "1",
            "--width",
            "4",
            "--log-every",
            "1",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert result["dataset"] == "CIFAR-10"
    assert 0.0 <= result["accuracy"]["radam"][0.01][0] <= 1.0
    assert (tmp_path / "out" / "accuracy_vs_lr.png").is_file()
    scalars = read_scalars(tmp_path / "out")
    assert ("tensorboard/radam_lr0.01/seed0", "test/accuracy") in scalars


def test_lr_robustness_radam_beats_adam_at_large_learning_rates(tmp_path):
    # The measured default table (README, Results): at lr 0.1 and 0.03 RAdam's test accuracy is above
    # Adam's on every seed (Adam diverges on one seed at 0.1); momentum SGD is best of the three at 0.1.
    result = load_example("lr_robustness").main(
        ["--methods", "sgd", "adam", "radam", "--lrs", "0.1", "0.03", "--output-dir", str(tmp_path)]
    )
    accuracy = result["accuracy"]
    assert result["dataset"] == "digits"
    for lr in (0.1, 0.03):
        for seed, (adam, radam) in enumerate(zip(accuracy["adam"][lr], accuracy["radam"][lr])):
            assert radam > adam, (lr, seed)
    for seed, (sgd, radam) in enumerate(zip(accuracy["sgd"][0.1], accuracy["radam"][0.1])):
        assert sgd > radam, seed
    assert (tmp_path / "accuracy_vs_lr.png").stat().st_size > 10_000


# --------------------------------------------------------------------------------------- warmup study
def test_warmup_study_adam_without_warmup_stalls_where_warmed_up_adam_trains(tmp_path):
    # The robust part of the measured default table, at half its steps and two of its three seeds:
    # Adam without warmup stays at the unigram entropy on every seed while Adam with the untuned
    # 2 / (1 - b2) warmup learns. (RAdam stalled on one seed of three in the default table, so its
    # place in the ordering depends on the seed and is not asserted here.)
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
    stall = result["unigram_entropy"] - study.STALL_MARGIN
    assert all(loss > stall for loss in result["train"]["adam"])
    assert all(loss < stall for loss in result["train"]["adam_untuned_warmup"])
    assert all(warm < cold for warm, cold in zip(result["val"]["adam_untuned_warmup"], result["val"]["adam"]))
    scalars = read_scalars(tmp_path)
    run = "tensorboard/adam/seed0"
    assert max(step for step, _ in scalars[(run, "train/loss")]) >= 195
    assert (run, "radam/group0/r_t") in scalars  # RectificationMonitor on every run
    accumulator = EventAccumulator(str(tmp_path / run), size_guidance={"histograms": 0})
    accumulator.Reload()
    histogram_steps = [event.step for event in accumulator.Histograms("grad/log10_abs")]
    assert histogram_steps[:3] == [0, 2, 4]  # the first updates, where the distribution distorts
    assert (tmp_path / "gradient_histograms.png").stat().st_size > 10_000
    # The paper's Figure 2 effect, read back from TensorBoard: without warmup the gradient magnitudes
    # collapse within 20 steps (median log10|g| about -3 -> -7 measured), with warmup they barely move (-3 -> -4).
    edges = np.linspace(-12.0, 2.0, 141)
    for seed in (0, 1):
        medians = {}
        for method in ("adam", "adam_untuned_warmup"):
            steps, fractions = study.read_gradient_histograms(
                tmp_path / "tensorboard" / method / f"seed{seed}", 20, edges
            )
            assert steps[0] == 0 and steps[-1] == 20
            medians[method] = [edges[1:][np.searchsorted(np.cumsum(f), 0.5)] for f in (fractions[0], fractions[-1])]
        assert medians["adam"][0] == pytest.approx(medians["adam_untuned_warmup"][0])  # same model, same first batch
        assert medians["adam"][1] < medians["adam"][0] - 3.0
        assert medians["adam"][1] < medians["adam_untuned_warmup"][1] - 2.0
