"""Non-finite gradients (nonfinite_grad) and GradScaler's unscaling inside step() (unscale_in_step)."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_radam import RAdam

PATHS = [dict(fused=True), dict(foreach=True), dict(foreach=False, fused=False)]
PATH_IDS = ["fused", "foreach", "for_loop"]


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _backward(model, seed=0, scaler=None):
    generator = torch.Generator().manual_seed(seed)
    model.zero_grad()
    loss = model(torch.randn(5, 4, generator=generator)).pow(2).mean()
    (loss if scaler is None else scaler.scale(loss)).backward()


def _snapshot(model, optimizer):
    params = [p.detach().clone() for p in model.parameters()]
    state = {
        i: {k: v.clone() for k, v in optimizer.state[p].items()}
        for i, p in enumerate(model.parameters())
        if p in optimizer.state
    }
    return params, state, optimizer.rectification_stats()


def _assert_same(a, b):
    params_a, state_a, stats_a = a
    params_b, state_b, stats_b = b
    assert all(torch.equal(x, y) for x, y in zip(params_a, params_b))
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[i][k], state_b[i][k]) for i in state_a for k in state_a[i])
    assert stats_a == stats_b


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(nonfinite_grad="warn"), ValueError, "Invalid nonfinite_grad: 'warn'"),
        (dict(nonfinite_grad="Skip"), ValueError, "Invalid nonfinite_grad: 'Skip'"),
        (dict(nonfinite_grad=None), TypeError, "Invalid nonfinite_grad: .*got None"),
        (dict(nonfinite_grad=True), TypeError, "Invalid nonfinite_grad: .*got True"),
        (dict(unscale_in_step=1), TypeError, "Invalid unscale_in_step: .*got 1"),
        (dict(unscale_in_step="yes"), TypeError, "Invalid unscale_in_step: .*got 'yes'"),
    ],
)
def test_nonfinite_invalid_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        RAdam(_model().parameters(), **kwargs)


def test_nonfinite_invalid_value_in_added_group_raises():
    model = _model()
    optimizer = RAdam(model[0].parameters())
    with pytest.raises(ValueError, match="Invalid nonfinite_grad: 'never'"):
        optimizer.add_param_group({"params": model[2].parameters(), "nonfinite_grad": "never"})


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("named", [True, False], ids=["named", "unnamed"])
def test_nonfinite_raise_names_the_parameter_and_updates_nothing(path, bad, named):
    model = _model()
    optimizer = RAdam(model.named_parameters() if named else model.parameters(), nonfinite_grad="raise", **path)
    for seed in range(7):  # into the rectified phase
        _backward(model, seed=seed)
        optimizer.step()
    _backward(model, seed=7)
    model[2].bias.grad[1] = bad
    before = _snapshot(model, optimizer)
    name = r" \('2.bias'\)" if named else ""
    with pytest.raises(
        RuntimeError, match=rf"non-finite gradient .* in parameter 3{name} of parameter group 0; nothing was updated"
    ):
        optimizer.step()
    _assert_same(_snapshot(model, optimizer), before)


def test_nonfinite_raise_names_the_group():
    model = _model()
    optimizer = RAdam([{"params": model[0].parameters()}, {"params": model[2].parameters()}], nonfinite_grad="raise")
    _backward(model)
    model[2].weight.grad[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="in parameter 0 of parameter group 1"):
        optimizer.step()
    assert len(optimizer.state) == 0  # not even the state was created


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("bad_step", [3, 8], ids=["unrectified_phase", "rectified_phase"])
def test_nonfinite_skip_skips_the_whole_step(path, bad_step):
    # A run with a non-finite gradient at bad_step equals, bitwise, a run that never saw that batch.
    model, clean_model = _model(), _model()
    groups = lambda m: [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 3e-3}]  # noqa: E731
    optimizer = RAdam(groups(model), lr=1e-2, nonfinite_grad="skip", **path)
    clean = RAdam(groups(clean_model), lr=1e-2, **path)
    for seed in range(1, 12):
        _backward(model, seed=seed)
        if seed == bad_step:
            model[0].weight.grad[0, 0] = float("nan")  # group 0 only: the step of every group is skipped
            before = _snapshot(model, optimizer)
            optimizer.step()
            _assert_same(_snapshot(model, optimizer), before)
            continue
        _backward(clean_model, seed=seed)
        optimizer.step()
        clean.step()
    _assert_same(_snapshot(model, optimizer), _snapshot(clean_model, clean))
    assert optimizer.state[model[0].weight]["step"].item() == 10


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_nonfinite_ignore_lets_nan_into_the_moments(path):
    model = _model()
    optimizer = RAdam(model.parameters(), **path)  # the default, as torch.optim
    _backward(model)
    model[0].weight.grad[0, 0] = float("nan")
    optimizer.step()
    assert optimizer.state[model[0].weight]["exp_avg"].isnan().any()


@pytest.mark.parametrize(("nonfinite_grad", "checked"), [("ignore", False), ("raise", True), ("skip", True)])
def test_nonfinite_check_runs_only_when_asked(nonfinite_grad, checked):
    # Off (the default), step() runs no check at all: no reduction over the gradients, nothing for the host to read.
    model = _model()
    optimizer = RAdam(model.parameters(), nonfinite_grad=nonfinite_grad)
    _backward(model)
    with _OpRecorder() as recorder:
        optimizer.step()
    assert ("_foreach_norm" in recorder.ops) is checked


@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaler_hands_over", "user_unscales_first"])
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_unscale_in_step_matches_scaler_unscaling_and_skips_inf(path, unscale_first):
    # user_unscales_first: scaler.unscale_ before step (as for clipping), so step() gets found_inf and no grad_scale
    model, reference_model = _model(), _model()
    optimizer = RAdam(model.parameters(), lr=1e-2, unscale_in_step=True, **path)
    reference = RAdam(reference_model.parameters(), lr=1e-2, **path)
    assert optimizer._step_supports_amp_scaling and not reference._step_supports_amp_scaling
    scaler, reference_scaler = (torch.amp.GradScaler("cpu", init_scale=2.0**10) for _ in range(2))
    for seed in range(10):
        _backward(model, seed=seed, scaler=scaler)
        _backward(reference_model, seed=seed, scaler=reference_scaler)
        if seed in (2, 7):  # one overflow in the unrectified phase, one in the rectified phase
            model[2].weight.grad[0, 0] = reference_model[2].weight.grad[0, 0] = float("inf")
            before = _snapshot(model, optimizer)
        if unscale_first:
            scaler.unscale_(optimizer)
            reference_scaler.unscale_(reference)
        scaler.step(optimizer)
        reference_scaler.step(reference)
        scaler.update()
        reference_scaler.update()
        if seed in (2, 7):
            _assert_same(_snapshot(model, optimizer), before)
    assert scaler.get_scale() == reference_scaler.get_scale() == 2.0**8  # backed off twice
    assert optimizer.state[model[0].weight]["step"].item() == 8
    for p, q in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)  # unscaled in the update vs by the scaler
        torch.testing.assert_close(p.grad, q.grad)  # the gradients are left unscaled, as by the scaler


def test_unscale_in_step_survives_pickling_and_defaults_off():
    import pickle

    optimizer = RAdam(_model().parameters(), unscale_in_step=True)
    assert pickle.loads(pickle.dumps(optimizer))._step_supports_amp_scaling
    assert not RAdam(_model().parameters())._step_supports_amp_scaling
