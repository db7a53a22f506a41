"""Non-finite gradients (nonfinite_grad) and GradScaler's unscaling inside step() (unscale_in_step)."""

import pytest
import torch
from helpers import PATHS, Model, assert_same, backward, snapshot
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_radam import RAdam


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"nonfinite_grad": "warn"}, ValueError, "Invalid nonfinite_grad: 'warn'"),
        ({"nonfinite_grad": "Skip"}, ValueError, "Invalid nonfinite_grad: 'Skip'"),
        ({"nonfinite_grad": None}, TypeError, "Invalid nonfinite_grad: .*got None"),
        ({"nonfinite_grad": True}, TypeError, "Invalid nonfinite_grad: .*got True"),
        ({"unscale_in_step": 1}, TypeError, "Invalid unscale_in_step: .*got 1"),
        ({"unscale_in_step": "yes"}, TypeError, "Invalid unscale_in_step: .*got 'yes'"),
    ],
)
def test_nonfinite_invalid_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        RAdam(Model(seed=0).parameters(), **kwargs)


def test_nonfinite_invalid_value_in_added_group_raises():
    model = Model(seed=0)
    optimizer = RAdam(model.hidden.parameters())
    with pytest.raises(ValueError, match="Invalid nonfinite_grad: 'never'"):
        optimizer.add_param_group({"params": model.out.parameters(), "nonfinite_grad": "never"})


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_nonfinite_raise_names_the_parameter_and_updates_nothing(path, bad, named):
    model = Model(seed=0)
    optimizer = RAdam(model.named_parameters() if named else model.parameters(), nonfinite_grad="raise", **path)
    for seed in range(7):  # into the rectified phase
        backward(model, seed=seed)
        optimizer.step()
    backward(model, seed=7)
    model.out.bias.grad[1] = bad
    before = snapshot(model.parameters(), optimizer)
    name = r" \('out.bias'\)" if named else ""
    with pytest.raises(
        RuntimeError, match=rf"non-finite gradient .* in parameter 3{name} of parameter group 0; nothing was updated"
    ):
        optimizer.step()
    assert_same(snapshot(model.parameters(), optimizer), before)


def test_nonfinite_raise_names_the_group():
    model = Model(seed=0)
    optimizer = RAdam(
        [{"params": model.hidden.parameters()}, {"params": model.out.parameters()}], nonfinite_grad="raise"
    )
    backward(model)
    model.out.weight.grad[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="in parameter 0 of parameter group 1"):
        optimizer.step()
    assert len(optimizer.state) == 0  # not even the state was created


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bad_step", [3, 8], ids=["unrectified_phase", "rectified_phase"])
def test_nonfinite_skip_skips_the_whole_step(path, bad_step, device):
    # A run with a non-finite gradient at bad_step equals, bitwise, a run that never saw that batch.
    model, clean_model = Model(seed=0).to(device), Model(seed=0).to(device)
    groups = lambda m: [{"params": m.hidden.parameters()}, {"params": m.out.parameters(), "lr": 3e-3}]
    optimizer = RAdam(groups(model), lr=1e-2, nonfinite_grad="skip", **path)
    clean = RAdam(groups(clean_model), lr=1e-2, **path)
    for seed in range(1, 12):
        backward(model, seed=seed)
        if seed == bad_step:
            model.hidden.weight.grad[0, 0] = float("nan")  # group 0 only: the step of every group is skipped
            before = snapshot(model.parameters(), optimizer)
            optimizer.step()
            assert_same(snapshot(model.parameters(), optimizer), before)
            continue
        backward(clean_model, seed=seed)
        optimizer.step()
        clean.step()
    assert_same(snapshot(model.parameters(), optimizer), snapshot(clean_model.parameters(), clean))
    assert optimizer.state[model.hidden.weight]["step"].item() == 10


@pytest.mark.parametrize("path", PATHS)
def test_nonfinite_ignore_lets_nan_into_the_moments(path):
    model = Model(seed=0)
    optimizer = RAdam(model.parameters(), **path)  # the default, as torch.optim
    backward(model)
    model.hidden.weight.grad[0, 0] = float("nan")
    optimizer.step()
    assert optimizer.state[model.hidden.weight]["exp_avg"].isnan().any()


@pytest.mark.parametrize(("nonfinite_grad", "checked"), [("ignore", False), ("raise", True), ("skip", True)])
def test_nonfinite_check_runs_only_when_asked(nonfinite_grad, checked):
    # Off (the default), step() runs no check at all: no reduction over the gradients, nothing for the host to read.
    model = Model(seed=0)
    optimizer = RAdam(model.parameters(), nonfinite_grad=nonfinite_grad)
    backward(model)
    with _OpRecorder() as recorder:
        optimizer.step()
    assert ("_foreach_norm" in recorder.ops) is checked


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler_hands_over", "user_unscales_first"])
@pytest.mark.parametrize("path", PATHS)
def test_unscale_in_step_matches_scaler_unscaling_and_skips_inf(path, unscale_first, device):
    # user_unscales_first: scaler.unscale_ before step (as for clipping), so step() gets found_inf and no grad_scale.
    # On CUDA the forward runs under float16 autocast, as with Lightning's "16-mixed".
    autocast = {"dtype": torch.float16} if device == "cuda" else {}
    model, reference_model = Model(seed=0).to(device), Model(seed=0).to(device)
    optimizer = RAdam(model.parameters(), lr=1e-2, unscale_in_step=True, **path)
    reference = RAdam(reference_model.parameters(), lr=1e-2, **path)
    assert optimizer._step_supports_amp_scaling
    assert not reference._step_supports_amp_scaling
    scaler, reference_scaler = (torch.amp.GradScaler(device, init_scale=2.0**10) for _ in range(2))
    for seed in range(10):
        backward(model, seed=seed, scaler=scaler, **autocast)
        backward(reference_model, seed=seed, scaler=reference_scaler, **autocast)
        if seed in (2, 7):  # one overflow in the unrectified phase, one in the rectified phase
            model.out.weight.grad[0, 0] = reference_model.out.weight.grad[0, 0] = float("inf")
            before = snapshot(model.parameters(), optimizer)
            reference_before = snapshot(reference_model.parameters(), reference)
        if unscale_first:
            scaler.unscale_(optimizer)
            reference_scaler.unscale_(reference)
        scaler.step(optimizer)
        reference_scaler.step(reference)
        scaler.update()
        reference_scaler.update()
        if seed in (2, 7):  # both skipped the step: nothing moved
            assert_same(snapshot(model.parameters(), optimizer), before)
            assert_same(snapshot(reference_model.parameters(), reference), reference_before)
    assert scaler.get_scale() == reference_scaler.get_scale() == 2.0**8  # backed off twice
    assert optimizer.state[model.hidden.weight]["step"].item() == 8
    for p, q in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)  # unscaled in the update vs by the scaler
        torch.testing.assert_close(p.grad, q.grad)  # the gradients are left unscaled, as by the scaler


def test_unscale_in_step_survives_pickling_and_defaults_off():
    import pickle

    optimizer = RAdam(Model(seed=0).parameters(), unscale_in_step=True)
    assert pickle.loads(pickle.dumps(optimizer))._step_supports_amp_scaling  # noqa: S301 (our own bytes)
    assert not RAdam(Model(seed=0).parameters())._step_supports_amp_scaling
