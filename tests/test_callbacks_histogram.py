"""GradientHistogramMonitor: exact bucket counts against numpy, through a real Trainer and TensorBoard event files."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import lightning as L
import matplotlib.image
import numpy as np
import pytest
import torch
from helpers import (
    Model,
    assert_histogram_equals_numpy,
    binned_values,
    known_gradients,
    make_trainer,
    read_events,
    scalar_series,
)
from lightning.pytorch.plugins.precision import MixedPrecision

from lightning_radam import RAdam
from lightning_radam.callbacks import (
    DistortionWarning,
    GradientHistogramMonitor,
    gradient_histogram_monitor,
    log2_bucket_counts,
)


def _tiled(gradients: dict, tiles: int, zeros: bool) -> dict:
    """``w`` repeated ``tiles`` times; without ``zeros``, also without anything in bucket 0 (zeros and |w| < 2^-128)."""
    w = gradients["w"].repeat(tiles)
    return {**gradients, "w": w if zeros else w[w.float().abs() >= 2.0**-126]}


@pytest.fixture(params=["c", "torch"])
def counting(request, monkeypatch):
    """Both ways of counting on the CPU: in C (the extension setup.py builds) and through torch (without it)."""
    if request.param == "torch":
        monkeypatch.setattr(gradient_histogram_monitor, "_bucket_count", None)
    return request.param


# The paths through log2_bucket_counts and _count_nonzero: (dtype, tiles of known_gradients()["w"], zeros kept)
PATHS = [
    *(pytest.param(dtype, 1, True, id=str(dtype)[6:]) for dtype in (torch.float32, torch.bfloat16, torch.float16)),
    pytest.param(torch.float64, 1, True, id="float64"),  # w: 3,050 elements, below 4096: count_nonzero
    pytest.param(torch.float32, 2, True, id="zeros"),  # 6,100 elements with zeros: count_nonzero
    pytest.param(torch.float32, 2, False, id="bucket_0_empty"),  # 4096 or more, bucket 0 empty: no pass over them
    # more than 2 * 2^18 elements, binned in three pieces, each converted to float32 on its own
    *(pytest.param(dtype, 180, True, id=f"pieces-{str(dtype)[6:]}") for dtype in (torch.float32, torch.float64)),
    pytest.param(torch.bfloat16, 180, True, id="pieces-bfloat16"),
]


@pytest.mark.parametrize(("dtype", "tiles", "zeros"), PATHS)
def test_histogram_monitor_counts_equal_numpy(tmp_path, counting, dtype, tiles, zeros):
    gradients = _tiled(known_gradients(), tiles, zeros)
    model = Model(gradients=gradients, dtype=dtype)
    trainer = make_trainer(tmp_path, [GradientHistogramMonitor(layers=r"^w$")], max_steps=2)
    trainer.fit(model)
    events = read_events(trainer.logger.log_dir)
    w, b = binned_values(model.gradients["w"]), binned_values(model.gradients["b"])
    everything = np.concatenate([w, b])
    assert_histogram_equals_numpy(events, "grad/layer/w/log10_abs", w, [0, 1])
    assert_histogram_equals_numpy(events, "grad/log10_abs", everything, [0, 1])
    assert "grad/layer/b/log10_abs" not in events.Tags()["histograms"]
    assert scalar_series(events, "grad/zeros")[1].tolist() == [float((everything == 0).sum())] * 2
    assert scalar_series(events, "grad/nonfinite")[1].tolist() == [float((~np.isfinite(everything)).sum())] * 2


SCHEDULES = [  # monitor arguments, Trainer's log_every_n_steps, max_steps: global steps, per-layer steps
    ({"every_n_steps": 2, "early_steps": 0, "layer_every_n_steps": 4}, 1, 9, [0, 2, 4, 6, 8], [0, 4, 8]),
    ({}, 4, 10, list(range(10)), None),  # the default early phase, 50 steps
    ({"early_steps": 3}, 4, 14, [0, 1, 2, 4, 8, 12], None),  # then the Trainer's log_every_n_steps
    ({"early_steps": 5, "every_n_steps": 3, "layer_every_n_steps": 2}, 50, 13, [0, 1, 2, 3, 4, 6, 9, 12], [0, 2, 4, 6, 12]),  # noqa: E501
    ({"early_steps": 0}, 5, 11, [0, 5, 10], None),
    ({"early_steps": 3}, 0, 8, [0, 1, 2], None),  # log_every_n_steps=0: the early phase only
    ({"every_n_steps": 1, "early_steps": 0}, 50, 4, [0, 1, 2, 3], None),
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "log_every_n_steps", "max_steps", "steps", "layer_steps"), SCHEDULES)
def test_histogram_monitor_schedule_and_totals(tmp_path, arguments, log_every_n_steps, max_steps, steps, layer_steps):
    monitor = GradientHistogramMonitor(layers=r"^hidden\.", **arguments)
    trainer = make_trainer(tmp_path, [monitor], max_steps=max_steps, log_every_n_steps=log_every_n_steps)
    model = Model()
    trainer.fit(model)
    events = read_events(trainer.logger.log_dir)
    numel = sum(p.numel() for p in model.parameters())
    histograms = events.Histograms("grad/log10_abs")
    assert [h.step for h in histograms] == steps
    logged_steps, zeros = scalar_series(events, "grad/zeros")
    assert logged_steps == steps
    assert scalar_series(events, "grad/nonfinite")[1].tolist() == [0.0] * len(steps)
    # every element is counted once: in a bucket, or as an exact zero
    assert [h.histogram_value.num + z for h, z in zip(histograms, zeros, strict=True)] == [numel] * len(steps)
    for name in ("hidden.weight", "hidden.bias"):
        assert [h.step for h in events.Histograms(f"grad/layer/{name}/log10_abs")] == (layer_steps or steps)
    assert not any(tag.startswith("grad/layer/out") for tag in events.Tags()["histograms"])
    early = [h for h in histograms if h.step < min(monitor.early_steps, 51)]
    if early:  # the early tag repeats the dense phase, point for point
        assert [h.histogram_value for h in events.Histograms("grad/log10_abs/early")] == [
            h.histogram_value for h in early
        ]
    else:
        assert "grad/log10_abs/early" not in events.Tags()["histograms"]


def test_histogram_monitor_before_and_after_clipping(tmp_path):
    gradients = known_gradients(finite_only=True, max_log10=3.0)
    model = Model(gradients=gradients)
    monitors = [
        GradientHistogramMonitor(layers="w"),
        GradientHistogramMonitor(layers="w", when="after_clip", prefix="grad_clipped"),
    ]
    trainer = make_trainer(tmp_path, monitors, max_steps=2, gradient_clip_val=1.0)
    trainer.fit(model)
    events = read_events(trainer.logger.log_dir)
    clipped = [torch.zeros_like(g, requires_grad=True) for g in model.gradients.values()]
    for p, g in zip(clipped, model.gradients.values(), strict=True):
        p.grad = g.clone()
    assert torch.nn.utils.clip_grad_norm_(clipped, 1.0) > 1.0  # the gradients are clipped, as Lightning clips them
    clipped = [p.grad for p in clipped]
    w = binned_values(model.gradients["w"])
    assert_histogram_equals_numpy(events, "grad/layer/w/log10_abs", w, [0, 1])
    assert_histogram_equals_numpy(events, "grad_clipped/layer/w/log10_abs", clipped[0].double().numpy(), [0, 1])
    assert_histogram_equals_numpy(events, "grad_clipped/log10_abs", torch.cat(clipped).double().numpy(), [0, 1])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_histogram_monitor_divides_out_the_scale_when_the_optimizer_unscales_in_step(tmp_path, device):
    """Lightning leaves the gradients scaled for optimizers that unscale inside step(); the histograms must not move."""
    histograms = []
    for unscale_in_step in (False, True):
        L.seed_everything(0)
        model = Model(
            lambda params, unscale_in_step=unscale_in_step: RAdam(params, lr=1e-2, unscale_in_step=unscale_in_step)
        )
        plugin = MixedPrecision("16-mixed", device, scaler=torch.amp.GradScaler(device, init_scale=2.0**12))
        trainer = make_trainer(
            tmp_path / str(unscale_in_step),
            [GradientHistogramMonitor()],
            max_steps=2,
            accelerator=device,
            plugins=[plugin],
        )
        trainer.fit(model)
        histograms.append([h.histogram_value for h in read_events(trainer.logger.log_dir).Histograms("grad/log10_abs")])
    assert len(histograms[0]) == len(histograms[1]) == 2
    for unscaled, scaled in zip(*histograms, strict=True):
        assert scaled.bucket == unscaled.bucket
        np.testing.assert_allclose(scaled.bucket_limit, unscaled.bucket_limit, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_histogram_device_counting_equals_bincount(dtype):
    """The synchronisation-free count used off the CPU gives bincount's counts (run here on the CPU)."""
    values = known_gradients()["w"].to(dtype)
    bits = values.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)
    ids = torch.bitwise_right_shift(bits, 5 if dtype == torch.bfloat16 else 21).bitwise_and_(1023)
    on_device = gradient_histogram_monitor._count_ids(ids, sync_free=True)
    assert torch.equal(on_device, gradient_histogram_monitor._count_ids(ids, sync_free=False))
    assert torch.equal(on_device, log2_bucket_counts(values))
    assert on_device.sum() == values.numel()


@pytest.mark.parametrize(  # logged steps: 0 1 2 | 0 3 6 | 0 1 3 | 0 2 4
    ("every_n_steps", "early_steps", "max_steps"), [(1, 0, 3), (3, 0, 9), (3, 2, 4), (2, 1, 5)]
)
def test_histogram_monitor_subsample_estimates_average_to_the_exact_counts(
    tmp_path, every_n_steps, early_steps, max_steps
):
    """With subsample=k the offsets of k consecutive logged steps partition the elements: the mean of the k
    estimates is exact."""
    k = 3  # every_n_steps = 3 = k: the offset must rotate with the logged step, not the step
    gradients = known_gradients()
    model = Model(gradients=gradients)
    monitor = GradientHistogramMonitor(layers="^w$", subsample=k, every_n_steps=every_n_steps, early_steps=early_steps)
    trainer = make_trainer(tmp_path, [monitor], max_steps=max_steps)
    trainer.fit(model)
    events = read_events(trainer.logger.log_dir)
    w = binned_values(model.gradients["w"])
    histograms = [h.histogram_value for h in events.Histograms("grad/layer/w/log10_abs")]
    assert len(histograms) == k
    totals: dict[float, float] = {}
    for value in histograms:
        assert value.num > 0
        assert abs(value.num - np.count_nonzero(w)) <= 0.1 * w.size  # each one is an estimate
        for limit, count in zip(value.bucket_limit, value.bucket, strict=True):
            totals[limit] = totals.get(limit, 0.0) + count / k
    limits = sorted(totals)
    lowest = min(value.min for value in histograms)
    expected, _ = np.histogram(np.log10(np.abs(w[w != 0])), bins=[lowest, *limits])
    np.testing.assert_allclose([totals[limit] for limit in limits], expected, rtol=0, atol=1e-9)
    everything = np.concatenate([w, binned_values(model.gradients["b"])])
    assert np.mean(scalar_series(events, "grad/zeros")[1]) == pytest.approx((everything == 0).sum())
    assert np.mean(scalar_series(events, "grad/nonfinite")[1]) == pytest.approx((~np.isfinite(everything)).sum())


@pytest.mark.parametrize(
    ("dtype", "values", "in_bucket_0"),
    [
        (torch.float32, [0.0, -0.0, 2.0**-149, -1.0], 3),  # the smallest subnormal: bucket 0, not zero
        (torch.bfloat16, [0.0, -0.0, 2.0**-133, -1.0], 3),
        (torch.float16, [0.0, -0.0, 2.0**-24, -1.0], 2),  # float16's smallest subnormal is a normal float32
        (torch.float64, [0.0, -0.0, 1e-300, -1e300], 3),  # 1e-300 is 0 as a float32 (bucket 0), yet not zero
    ],
)
@pytest.mark.parametrize("tiles", [1, 70_000], ids=["one piece", "two pieces"])
def test_histogram_counts_non_zero_elements_from_the_bits(counting, dtype, values, in_bucket_0, tiles):
    tensor = torch.tensor(values, dtype=torch.float64).to(dtype).repeat(tiles)
    pieces: list[torch.Tensor] = []
    counts = gradient_histogram_monitor._bin(tensor, pieces)
    in_c = counting == "c" and dtype in (torch.float32, torch.bfloat16)  # one pass, not pieces of 2^18
    assert len(pieces) == (1 if tiles == 1 or in_c else 2)
    assert int(sum(pieces)) == np.count_nonzero(tensor.double().numpy()) == 2 * tiles  # -0.0 is zero
    assert torch.equal(counts, log2_bucket_counts(tensor))
    assert counts[0] == in_bucket_0 * tiles  # zeros and the smallest values share bucket 0


def test_the_c_count_is_built():
    """setup.py builds it wherever this suite runs (a C compiler is there): without it, counting takes twice as long."""
    assert gradient_histogram_monitor._bucket_count is not None


def _mixed_values(n: int) -> torch.Tensor:
    """known_gradients()'s w (every bucket, subnormals, zeros), runs of zeros and of one value, inf, NaN, -0.0."""
    w = known_gradients()["w"].float()
    runs = torch.cat([torch.zeros(1000), torch.full((1000,), -3.0), torch.tensor([float("inf"), float("nan"), -0.0])])
    return torch.cat([w, runs, torch.randn(n, generator=torch.Generator().manual_seed(0))])[:n]


C_LAYOUTS = {  # what is binned, from 2^19 + 3 values: the 1-D views _bin hands to C, and what reshape(-1) copies
    "contiguous": lambda x: x,
    "every 3rd from 1 (subsample)": lambda x: x[1::3],
    "empty": lambda x: x[:0],
    "3 elements": lambda x: x[:3],
    "transposed": lambda x: x[: 2**18].view(512, 512).t(),
    "one element, expanded (stride 0)": lambda x: x[-3:-2].expand(1001),
    "offset into its storage": lambda x: x[5:-7],
    "negated view": lambda x: torch._neg_view(x),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("layout", C_LAYOUTS)
def test_the_c_count_equals_the_torch_count(monkeypatch, dtype, layout):
    tensor = C_LAYOUTS[layout](_mixed_values(2**19 + 3).to(dtype))
    in_c: list[torch.Tensor] = []
    counts = gradient_histogram_monitor._bin(tensor, in_c)
    monkeypatch.setattr(gradient_histogram_monitor, "_bucket_count", None)
    in_torch: list[torch.Tensor] = []
    assert torch.equal(counts, gradient_histogram_monitor._bin(tensor, in_torch))
    assert int(sum(in_c)) == int(sum(in_torch)) == torch.count_nonzero(tensor)
    assert int(counts.sum()) == tensor.numel()


def _misaligned(dtype: torch.dtype) -> torch.Tensor:
    """Elements one byte off their width's alignment (a tensor over a byte buffer)."""
    values = _mixed_values(1001).to(dtype)
    raw = bytearray(1) + bytearray(values.view(torch.uint8).numpy().tobytes())
    return torch.frombuffer(raw, dtype=dtype, offset=1)


LEFT_TO_TORCH = {  # float32 and bfloat16 CPU tensors that the C count must not read: torch counts them
    "ZeroTensor gradient (no memory)": lambda dtype: torch._efficientzerotensor(2**15, dtype=dtype),
    "misaligned elements": _misaligned,
    "a Tensor subclass": lambda dtype: _mixed_values(1001).to(dtype).as_subclass(_Subclass),
}


class _Subclass(torch.Tensor):
    pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("case", LEFT_TO_TORCH)
def test_what_the_c_count_cannot_read_is_counted_by_torch(dtype, case):
    tensor = LEFT_TO_TORCH[case](dtype)
    assert gradient_histogram_monitor._in_c(tensor.reshape(-1)) is None
    nonzero: list[torch.Tensor] = []
    counts = gradient_histogram_monitor._bin(tensor, nonzero).numpy()
    values = tensor.as_subclass(torch.Tensor).float().numpy(force=True)
    expected = np.bincount((values.view(np.uint32) & 0x7FFFFFFF) >> 21, minlength=1024)  # independent: the bits
    np.testing.assert_array_equal(counts, expected)
    assert int(sum(nonzero)) == np.count_nonzero(values)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # bincount has no batching rule
def test_torch_func_transforms_count_through_torch():
    """Under vmap the tensors are CPU float32 torch.Tensors without memory of their own: torch counts them."""
    rows = _mixed_values(3000).view(3, 1000)
    batched = torch.func.vmap(log2_bucket_counts)(rows)
    assert torch.equal(batched, torch.stack([log2_bucket_counts(row) for row in rows]))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((8, 1, 1, 4, 0), "counts=0"),  # no counts
        ((0, 4, 1, 4, 8), "data=0"),  # elements at address 0
        ((8, 1, 1, 4, -8), "counts=-8"),
        ((-8, 1, 1, 4, 8), "data=-8"),
        ((6, 1, 1, 4, 8), "data=6"),  # float32 elements 2 bytes off
        ((8, 1, 1, 4, 12), "counts=12"),
        ((8, -1, 1, 4, 8), "numel=-1"),
        ((8, 1, -2, 4, 8), "stride=-2"),
        ((8, 1, 1, 8, 8), "width=8"),
    ],
)
def test_the_c_count_refuses_what_it_cannot_read(arguments, message):
    with pytest.raises(ValueError, match=f"invalid arguments .*{message}"):
        gradient_histogram_monitor._bucket_count.count(*arguments)


def test_histogram_float64_beyond_float32_range_is_finite():
    values = torch.tensor([1e300, -1e300, 1e-300, float("inf"), float("nan")], dtype=torch.float64)
    counts = log2_bucket_counts(values)
    assert counts[1019] == 2  # the largest finite bucket, [1.75, 2) x 2^127
    assert counts[0] == 1  # below float32's subnormals: with zero and the tiniest values
    assert counts[1020:].sum() == 2  # only the real inf and NaN


@pytest.mark.parametrize(  # early_steps, log_every_n_steps, max_steps: steps of the pictures
    ("early_steps", "log_every_n_steps", "max_steps", "pictures"),
    [(4, 3, 11, [3, 9]), (4, 2, 4, [3]), (0, 2, 5, [4]), (6, 5, 3, [2])],
)
def test_histogram_monitor_draws_the_stacked_histogram(tmp_path, early_steps, log_every_n_steps, max_steps, pictures):
    """At the end of the early phase and of the fit: the Images tab and a PNG file in the log directory, the same
    picture, drawn from every logged step so far."""
    monitor = GradientHistogramMonitor(early_steps=early_steps)
    trainer = make_trainer(tmp_path, [monitor], max_steps=max_steps, log_every_n_steps=log_every_n_steps)
    trainer.fit(Model())
    events = read_events(trainer.logger.log_dir)
    images = events.Images("grad/log10_abs/stacked")
    assert [image.step for image in images] == pictures
    logged = [h.step for h in events.Histograms("grad/log10_abs")]
    assert monitor.state_dict()["history"][0]["steps"] == logged
    for image in images:
        png = (Path(trainer.logger.log_dir) / f"grad_log10_abs_stacked_step{image.step}.png").read_bytes()
        assert png == image.encoded_image_string
        assert (image.width, image.height) == (640, 400)
        assert matplotlib.image.imread(io.BytesIO(png)).shape == (400, 640, 3)


NORMAL_GRADIENTS = {"w": 1e-2 * torch.randn(4096, generator=torch.Generator().manual_seed(0))}  # 1e-2 .. 1e-6
ALARMS = [  # decades per step, on_distortion, max_steps: alarm step, optimizer steps taken, warnings
    (0.35, "warn", 20, 9, 20, 1),  # 3.15 decades at step 9 (2.8 at step 8)
    (0.35, "stop", 40, 9, 10, 1),  # the fit stops after the batch of step 9
    (0.35, "ignore", 20, 9, 20, 0),  # recorded, not said
    (0.05, "warn", 80, None, 80, 0),  # a slow decline: 3 decades only at step 60, after distortion_steps=30
    (0.0, "stop", 40, None, 40, 0),
]


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
@pytest.mark.parametrize(("decades", "on_distortion", "max_steps", "alarm_step", "steps", "warnings"), ALARMS)
def test_histogram_monitor_distortion_alarm(tmp_path, decades, on_distortion, max_steps, alarm_step, steps, warnings):
    """The distortion scalar, the alarm step, one warning in numbers, and the stop, on gradients that fall by a known
    number of decades a step."""
    model = Model(gradients=NORMAL_GRADIENTS, decades_per_step=decades, batches=80)
    monitor = GradientHistogramMonitor(on_distortion=on_distortion, every_n_steps=1)
    trainer = make_trainer(tmp_path, [monitor], max_steps=max_steps)
    with pytest.warns() as caught:
        trainer.fit(model)
    alarms = [str(w.message) for w in caught if issubclass(w.category, DistortionWarning)]
    assert len(alarms) == warnings
    assert monitor.alarm_step == alarm_step
    assert trainer.global_step == steps
    events = read_events(trainer.logger.log_dir)
    logged, distortion = scalar_series(events, "grad/distortion")
    assert logged == list(range(steps))
    np.testing.assert_allclose(distortion, decades * np.arange(steps), rtol=0, atol=0.06)  # within a bucket
    _, median = scalar_series(events, "grad/log10_abs/p50")
    np.testing.assert_allclose(median[0] - median, decades * np.arange(steps), rtol=0, atol=0.06)
    for message in alarms:
        assert re.match(r"GradientHistogramMonitor\(prefix='grad', when='before_clip'\): Early distortion of the"
                        r" gradients at step 9: median \|g\| fell 3\.\d decades in 9 steps", message)  # fmt: skip
        assert "train with RAdam" in message
        assert 'warmup="untuned_linear"' in message
        assert ("Stopping the fit" in message) == (on_distortion == "stop")


@pytest.mark.filterwarnings("ignore:.*does not have many workers")
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_histogram_monitor_alarm_survives_a_resume(tmp_path):
    gradients = NORMAL_GRADIENTS
    first = make_trainer(tmp_path, [GradientHistogramMonitor()], max_steps=12)
    with pytest.warns(DistortionWarning):
        first.fit(Model(gradients=gradients, decades_per_step=0.35, batches=40))
    first.save_checkpoint(tmp_path / "step12.ckpt")
    monitor = GradientHistogramMonitor()
    second = make_trainer(tmp_path, [monitor], max_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DistortionWarning)  # fired before the checkpoint: not again
        second.fit(Model(gradients=gradients, decades_per_step=0.35, batches=40), ckpt_path=tmp_path / "step12.ckpt")
    assert monitor.alarm_step == 9
    _, distortion = scalar_series(read_events(second.logger.log_dir), "grad/distortion")
    np.testing.assert_allclose(distortion[-8:], 0.35 * np.arange(12, 20), rtol=0, atol=0.06)  # still from step 0


@pytest.mark.parametrize(("early_steps", "every", "steps"), [(50, 1, 5000), (50, 50, 200_000), (10_000, 1, 3000)])
def test_histogram_monitor_picture_history_stays_bounded(early_steps, every, steps):
    """The host-side record of the picture keeps at most MAX_PICTURE_STEPS steps, the first and the last, and the
    early phase whole when it fits."""
    history = gradient_histogram_monitor._History()
    row = np.zeros(1020, dtype=np.int64)
    logged = [s for s in range(steps) if s < early_steps or s % every == 0]
    for step in logged:
        history.add(step, row, early_steps)
    assert len(history.steps) <= gradient_histogram_monitor.MAX_PICTURE_STEPS
    assert (history.steps[0], history.steps[-1]) == (0, logged[-1])
    assert history.steps == sorted(set(history.steps))
    if early_steps < gradient_histogram_monitor.MAX_PICTURE_STEPS:
        assert history.steps[:early_steps] == list(range(early_steps))
