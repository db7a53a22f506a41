"""What every public entry point accepts and rejects, as tables: one table and one test per entry point.

A rejected input raises a one-line TypeError (wrong kind) or ValueError (out of range) naming the argument and
the value; an accepted input behaves exactly as its plain Python equivalent.
"""

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers import Model, make_trainer, read_events
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_radam import Adam2k, RAdam
from lightning_radam.baselines import linear_warmup, untuned_exponential_warmup, untuned_linear_warmup
from lightning_radam.callbacks import GradientHistogramMonitor
from lightning_radam.rectification import (
    first_rectified_step,
    r_t,
    rho_inf,
    rho_t,
    variance_adaptive_lr,
    variance_adaptive_lr_first_order,
)

MAX_SCALE = 1.8446743e19  # sqrt(float32 max): the largest lr and weight_decay accepted (lightning_radam._checks)
F32 = float(np.float32(1e-3))  # what np.float32(1e-3) and torch.tensor(1e-3) hold, as a Python float
HUGE = 10**400  # an int beyond the float range


@dataclass(frozen=True)
class Raises:
    error: type
    match: str


def _rows(table):
    return [pytest.param(*row[1:], id=row[0]) for row in table]


def _steps(make_optimizer, param_factory, steps=7):
    """Parameters after ``steps`` steps of ``make_optimizer`` on sum(p^2), for the for-loop, foreach and fused paths."""
    results = []
    for path in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        param = param_factory()
        optimizer = make_optimizer([param], path)
        for _ in range(steps):
            optimizer.zero_grad()
            param.pow(2).sum().backward()
            optimizer.step()
        results.append(param.detach().clone())
    return results


def _param():
    return torch.linspace(-1.0, 1.0, 5).requires_grad_()


# RAdam(params, **kwargs): rejected -> Raises; accepted -> the plain Python arguments it must equal, stored and stepped.
RADAM_TABLE = [
    # accepted as torch.optim.RAdam accepts them, and stored as Python floats (a Tensor lr stays a Tensor)
    ("lr numpy float32", {"lr": np.float32(1e-3)}, {"lr": F32}),
    ("lr numpy float64", {"lr": np.float64(1e-3)}, {"lr": 1e-3}),
    ("lr numpy int", {"lr": np.int64(0)}, {"lr": 0.0}),
    ("lr 0-d numpy array", {"lr": np.array(1e-3)}, {"lr": 1e-3}),
    ("lr Fraction", {"lr": Fraction(1, 1000)}, {"lr": 1e-3}),
    ("lr 0-d tensor", {"lr": torch.tensor(1e-3)}, {"lr": F32}),
    ("lr 1-element tensor", {"lr": torch.tensor([1e-3])}, {"lr": F32}),
    ("lr float64 tensor", {"lr": torch.tensor(1e-3, dtype=torch.float64)}, {"lr": 1e-3}),
    ("lr at the maximum", {"lr": MAX_SCALE}, {"lr": MAX_SCALE}),
    ("betas numpy", {"betas": (np.float32(0.9), np.float64(0.99))}, {"betas": (float(np.float32(0.9)), 0.99)}),
    ("betas tensors", {"betas": (torch.tensor(0.5), torch.tensor(0.75))}, {"betas": (0.5, 0.75)}),
    ("betas list", {"betas": [0.9, 0.99]}, {"betas": (0.9, 0.99)}),
    ("betas 1-d tensor", {"betas": torch.tensor([0.5, 0.75])}, {"betas": (0.5, 0.75)}),
    ("betas numpy array", {"betas": np.array([0.9, 0.99])}, {"betas": (0.9, 0.99)}),
    ("eps numpy", {"eps": np.float64(1e-6)}, {"eps": 1e-6}),
    ("eps tensor", {"eps": torch.tensor(0.5)}, {"eps": 0.5}),
    ("eps huge but finite", {"eps": 1.7e308}, {"eps": 1.7e308}),  # only shrinks the update: works on every path
    ("weight_decay numpy", {"weight_decay": np.float32(0.5)}, {"weight_decay": 0.5}),
    ("weight_decay tensor", {"weight_decay": torch.tensor(0.25)}, {"weight_decay": 0.25}),
    ("weight_decay int", {"weight_decay": 1}, {"weight_decay": 1.0}),
    ("threshold numpy", {"threshold": np.float64(4.0)}, {"threshold": 4.0}),
    ("threshold tensor", {"threshold": torch.tensor(6.0)}, {"threshold": 6.0}),
    ("maximize numpy bool", {"maximize": np.bool_(False)}, {"maximize": False}),
    # rejected: beyond the float range, or finite but so large that step() would overflow float32 scalars
    ("lr int beyond float", {"lr": HUGE}, Raises(ValueError, r"Invalid learning rate: ~1e\+400 \(expected 0 <= lr")),
    ("lr 1.7e308", {"lr": 1.7e308},
        Raises(ValueError, r"Invalid learning rate: 1.7e\+308 \(expected 0 <= lr <= 1.8e\+19\)")),
    ("lr above maximum", {"lr": 1e20},
        Raises(ValueError, r"Invalid learning rate: 1e\+20 \(expected 0 <= lr <= 1.8e\+19\)")),
    ("lr tensor above maximum", {"lr": torch.tensor(1e20)},
        Raises(ValueError, r"Invalid learning rate: 1.00+2\d*e\+20 \(expected")),
    ("lr negative tensor", {"lr": torch.tensor(-1.0)}, Raises(ValueError, r"Invalid learning rate: -1.0")),
    ("lr complex tensor", {"lr": torch.tensor(1j)},
        Raises(TypeError, "Invalid learning rate: expected a float.*complex")),
    ("lr bool tensor", {"lr": torch.tensor(True)}, Raises(TypeError, "Invalid learning rate: expected a float.*bool")),
    ("lr numpy bool", {"lr": np.bool_(True)}, Raises(TypeError, r"Invalid learning rate: expected a float.*True")),
    ("lr Decimal", {"lr": Decimal("0.001")}, Raises(TypeError, r"Invalid learning rate: expected a float.*Decimal")),
    ("lr str", {"lr": "1e-3"}, Raises(TypeError, r"Invalid learning rate: expected a float.*got '1e-3'")),
    ("eps int beyond float", {"eps": HUGE}, Raises(ValueError, r"Invalid eps: ~1e\+400 \(expected 0 < eps < inf\)")),
    ("eps 2 elements", {"eps": torch.tensor([1e-8, 1e-8])},
        Raises(ValueError, r"Invalid eps: expected 1 element, got shape \(2,\)")),
    ("weight_decay int beyond float", {"weight_decay": HUGE}, Raises(ValueError, r"Invalid weight_decay: ~1e\+400")),
    ("weight_decay 1.7e308", {"weight_decay": 1.7e308},
        Raises(ValueError, r"Invalid weight_decay: 1.7e\+308 \(expected 0 <= weight_decay <= 1.8e\+19\)")),
    ("weight_decay numpy array", {"weight_decay": np.array([0.1, 0.2])},
        Raises(ValueError, r"Invalid weight_decay: expected 1 element")),
    ("betas None", {"betas": None},
        Raises(TypeError, r"Invalid betas: expected a pair of floats, got None.*\(beta1, beta2\)")),
    ("betas str", {"betas": "0.9,0.999"},
        Raises(TypeError, r"Invalid betas: expected a pair of floats, got '0.9,0.999'")),
    ("betas 3 elements", {"betas": torch.tensor([0.5, 0.6, 0.7])},
        Raises(TypeError, r"Invalid betas: expected a pair of floats")),
    ("beta2 int beyond float", {"betas": (0.9, HUGE)},
        Raises(ValueError, r"Invalid beta parameter at index 1: ~1e\+400")),
    ("beta1 numpy 1.0", {"betas": (np.float64(1.0), 0.999)},
        Raises(ValueError, r"Invalid beta parameter at index 0: 1.0")),
    ("beta1 None", {"betas": (None, 0.999)},
        Raises(TypeError, r"Invalid beta parameter at index 0: expected a float, got None")),
    ("threshold str", {"threshold": "5"}, Raises(TypeError, r"Invalid threshold: expected a float, got '5'")),
    ("threshold int beyond float", {"threshold": HUGE}, Raises(ValueError, r"Invalid threshold: ~1e\+400")),
    ("maximize int", {"maximize": 1}, Raises(TypeError, "Invalid maximize: expected a bool, got 1")),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "expected"), _rows(RADAM_TABLE))
def test_radam_inputs(kwargs, expected):
    if isinstance(expected, Raises):
        with pytest.raises(expected.error, match=expected.match):
            RAdam([_param()], **kwargs)
        with pytest.raises(expected.error, match=expected.match):  # in a parameter group as well
            RAdam([{"params": [_param()], **kwargs}])
        return
    group = RAdam([_param()], **kwargs).param_groups[0]
    for key, plain in expected.items():
        if isinstance(kwargs[key], torch.Tensor) and key == "lr":
            assert group[key] is kwargs[key]  # a Tensor lr stays a Tensor, as in torch.optim
        else:
            assert group[key] == plain, key
            assert type(group[key]) is type(plain), key
            if key == "betas":
                assert all(type(beta) is float for beta in group[key])
    ours = _steps(lambda params, path: RAdam(params, **kwargs, **path), _param)
    plain = _steps(lambda params, path: RAdam(params, **expected, **path), _param)
    for a, b in zip(ours, plain, strict=True):
        assert torch.equal(a, b)


# Adam2k(params, **kwargs), same conventions.
ADAM2K_TABLE = [
    ("lr numpy float32", {"lr": np.float32(1e-3)}, {"lr": F32}),
    ("lr tensor", {"lr": torch.tensor(1e-3)}, {"lr": F32}),
    ("betas tensors", {"betas": (torch.tensor(0.5), torch.tensor(0.75))}, {"betas": (0.5, 0.75)}),
    ("eps numpy", {"eps": np.float64(1e-6)}, {"eps": 1e-6}),
    ("weight_decay tensor", {"weight_decay": torch.tensor(0.25)}, {"weight_decay": 0.25}),
    ("k numpy int", {"k": np.int64(3)}, {"k": 3}),
    ("lr int beyond float", {"lr": HUGE}, Raises(ValueError, r"Invalid learning rate: ~1e\+400")),
    ("lr 1.7e308", {"lr": 1.7e308}, Raises(ValueError, r"Invalid learning rate: 1.7e\+308")),
    ("eps int beyond float", {"eps": HUGE}, Raises(ValueError, r"Invalid eps: ~1e\+400")),
    ("weight_decay 1.7e308", {"weight_decay": 1.7e308}, Raises(ValueError, r"Invalid weight_decay: 1.7e\+308")),
    ("betas str", {"betas": "0.9,0.999"},
        Raises(TypeError, r"Invalid betas: expected a pair of floats, got '0.9,0.999'")),
    ("k str", {"k": "3"}, Raises(TypeError, "Invalid k: expected an int, got '3'")),
    ("k numpy float", {"k": np.float64(3.0)},  # NumPy 1 prints 3.0, NumPy 2 np.float64(3.0)
        Raises(TypeError, r"Invalid k: expected an int, got (np\.float64\()?3\.0")),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "expected"), _rows(ADAM2K_TABLE))
def test_adam2k_inputs(kwargs, expected):
    if isinstance(expected, Raises):
        with pytest.raises(expected.error, match=expected.match):
            Adam2k([_param()], **kwargs)
        with pytest.raises(expected.error, match=expected.match):
            Adam2k([{"params": [_param()], **kwargs}])
        return
    group = Adam2k([_param()], **kwargs).param_groups[0]
    for key, plain in expected.items():
        if not isinstance(kwargs[key], torch.Tensor) or key != "lr":
            assert group[key] == plain, key
            assert type(group[key]) is type(plain), key
    param, reference = _param(), _param()
    ours, plain = Adam2k([param], **{"k": 2, **kwargs}), Adam2k([reference], **{"k": 2, **expected})
    for _ in range(5):
        for p, optimizer in ((param, ours), (reference, plain)):
            optimizer.zero_grad()
            p.pow(2).sum().backward()
            optimizer.step()
    assert torch.equal(param, reference)


# optimizer.add_param_group(group): a rejected group leaves the optimizer as it was, and a corrected retry succeeds.
ADD_PARAM_GROUP_TABLE = [
    ("RAdam lr -1", RAdam, {"lr": -1.0}, Raises(ValueError, r"Invalid learning rate: -1.0")),
    ("RAdam threshold 2", RAdam, {"threshold": 2}, Raises(ValueError, r"Invalid threshold: 2")),
    ("RAdam nonfinite_grad nope", RAdam, {"nonfinite_grad": "nope"},
        Raises(ValueError, "Invalid nonfinite_grad: 'nope'")),
    ("RAdam lr 1.7e308", RAdam, {"lr": 1.7e308}, Raises(ValueError, r"Invalid learning rate: 1.7e\+308")),
    ("RAdam betas str", RAdam, {"betas": "0.9"},
        Raises(TypeError, r"Invalid betas: expected a pair of floats, got '0.9'")),
    ("RAdam fused complex", RAdam, {"fused": True, "complex": True},
        Raises(RuntimeError, r"fused=True\) cannot update")),
    ("Adam2k lr -1", Adam2k, {"lr": -1.0}, Raises(ValueError, r"Invalid learning rate: -1.0")),
    ("Adam2k k -1", Adam2k, {"k": -1}, Raises(ValueError, r"Invalid k: -1")),
    ("Adam2k eps 0", Adam2k, {"eps": 0.0}, Raises(ValueError, r"Invalid eps: 0.0")),
]  # fmt: skip


@pytest.mark.parametrize(("optimizer_class", "bad", "expected"), _rows(ADD_PARAM_GROUP_TABLE))
def test_add_param_group_inputs(optimizer_class, bad, expected):
    first = _param()
    optimizer = optimizer_class([first], lr=0.1, **({"k": 0} if optimizer_class is Adam2k else {}))
    first.pow(2).sum().backward()
    optimizer.step()
    before = (repr(optimizer.param_groups), repr(optimizer.state_dict()))
    bad = dict(bad)
    dtype = torch.complex64 if bad.pop("complex", False) else torch.float32
    added = torch.ones(3, dtype=dtype, requires_grad=True)
    with pytest.raises(expected.error, match=expected.match):
        optimizer.add_param_group({"params": [added], **bad})
    assert (repr(optimizer.param_groups), repr(optimizer.state_dict())) == before
    added.grad = torch.ones_like(added)  # the rejected group must not step
    optimizer.step()
    assert torch.equal(added.detach(), torch.ones(3, dtype=dtype))
    optimizer.add_param_group({"params": [added], "lr": 0.1})  # the corrected retry succeeds
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["params"] == [added]


# RAdamMixin: hparams -> Raises, or the values the built optimizer holds.
MIXIN_TABLE = [
    ("min_lr_ratio numpy", {"min_lr_ratio": np.float64(0.1)}, {}),
    ("min_lr_ratio int", {"min_lr_ratio": 1}, {}),
    ("lr numpy", {"lr": np.float32(1e-3)}, {"lr": F32}),
    ("betas list", {"betas": [0.9, 0.98]}, {"betas": (0.9, 0.98)}),
    ("plain extra hparams", {"hidden": 32, "name": "mlp", "dims": [1, 2], "opts": {"a": (1, None)}}, {}),
    ("min_lr_ratio str", {"min_lr_ratio": "0.1"},
        Raises(TypeError, r"Invalid min_lr_ratio: expected a real number in \[0, 1\], got '0.1'")),
    ("min_lr_ratio None", {"min_lr_ratio": None},
        Raises(TypeError, r"Invalid min_lr_ratio: expected a real number in \[0, 1\], got None")),
    ("min_lr_ratio bool", {"min_lr_ratio": True},
        Raises(TypeError, r"Invalid min_lr_ratio: expected a real number in \[0, 1\], got True")),
    ("min_lr_ratio negative", {"min_lr_ratio": -0.1},
        Raises(ValueError, r"Invalid min_lr_ratio: -0.1 \(expected 0 <= min_lr_ratio <= 1\)")),
    ("min_lr_ratio nan", {"min_lr_ratio": math.nan}, Raises(ValueError, r"Invalid min_lr_ratio: nan")),
    ("betas None", {"betas": None},
        Raises(TypeError, r"Invalid betas: expected a pair of floats, got None.*\(beta1, beta2\)")),
    ("betas float", {"betas": 0.9}, Raises(TypeError, r"Invalid betas: expected a pair of floats, got 0.9")),
    ("betas str", {"betas": "0.9,0.999"},
        Raises(TypeError, r"Invalid betas: expected a pair of floats, got '0.9,0.999'")),
    ("class in hparams", {"act": torch.nn.ReLU},
        Raises(TypeError, r"Invalid hparams\['act'\]: <class 'torch.nn.*ReLU'> is a class or callable")),
    ("callable in hparams", {"loss": torch.nn.functional.mse_loss},
        Raises(TypeError, r"Invalid hparams\['loss'\]: <function mse_loss")),
    ("module in hparams", {"head": torch.nn.Identity()},
        Raises(TypeError, r"Invalid hparams\['head'\]: Identity\(\) is a class or callable")),
    ("callable in a list", {"layers": [64, torch.relu]},
        Raises(TypeError, r"Invalid hparams\['layers'\]\[1\]: <built-in method relu")),
    ("callable in a dict", {"opts": {"fn": len}},
        Raises(TypeError, r"Invalid hparams\['opts'\]\['fn'\]: <built-in function len>")),
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:Attribute 'head' is an instance of `nn.Module`")
@pytest.mark.parametrize(("hparams", "expected"), _rows(MIXIN_TABLE))
def test_mixin_hparams(hparams, expected):
    model = Model(net="norms", **hparams)
    if isinstance(expected, Raises):
        with pytest.raises(expected.error, match=expected.match):
            model.configure_optimizers()
        return
    optimizer = model.configure_optimizers()
    for key, value in expected.items():
        assert optimizer.param_groups[0][key] == value
        assert type(optimizer.param_groups[0][key]) is type(value)


# The rectification functions: (function, args) -> value (never NaN or inf), or Raises.
RHO_INF_0999 = 1999.0
RECTIFICATION_TABLE = [
    ("rho_t inf is rho_inf", rho_t, (math.inf, 0.999), RHO_INF_0999),
    ("rho_t 1.7e308", rho_t, (1.7e308, 0.999), RHO_INF_0999),
    ("rho_t int beyond float", rho_t, (HUGE, 0.999), RHO_INF_0999),
    ("rho_t 2**1023", rho_t, (2**1023, 0.999), RHO_INF_0999),
    ("rho_t array with inf", rho_t, (np.array([1.0, math.inf]), 0.999), [1.0, RHO_INF_0999]),
    ("rho_t tensor inf", rho_t, (torch.tensor([math.inf]), 0.5), [3.0]),
    ("rho_t inf beta2 0", rho_t, (math.inf, 0.0), 1.0),
    ("r_t inf is 1", r_t, (math.inf, 0.999), 1.0),
    ("r_t 1.7e308", r_t, (1.7e308, 0.999), 1.0),
    ("r_t int beyond float", r_t, (HUGE, 0.999), 1.0),
    ("r_t inf never rectified", r_t, (math.inf, 0.5), 0.0),
    ("rho_inf numpy", rho_inf, (np.float64(0.98),), 99.0),
    ("rho_inf tensor", rho_inf, (torch.tensor(0.5, dtype=torch.float64),), 3.0),
    ("first_rectified_step numpy", first_rectified_step, (np.float32(0.999), np.float64(4.0)), 5),
    ("first_rectified_step int threshold", first_rectified_step, (0.999, 5), 6),
    ("rho_t -inf", rho_t, (-math.inf, 0.999), Raises(ValueError, "Invalid step: -inf")),
    ("rho_t nan", rho_t, (math.nan, 0.999), Raises(ValueError, "Invalid step: nan")),
    ("rho_t -int beyond float", rho_t, (-HUGE, 0.999), Raises(ValueError, "Invalid step: -inf")),
    ("rho_t list of str", rho_t, (["6"], 0.999),
        Raises(TypeError, "Invalid step: expected real numbers, got an array of dtype <U1")),
    ("rho_t complex array", rho_t, (np.array([1 + 1j]), 0.999),
        Raises(TypeError, "Invalid step: expected real numbers, got an array of dtype complex128")),
    ("rho_t bool tensor", rho_t, (torch.tensor([True]), 0.999),
        Raises(TypeError, "Invalid step: expected a real tensor, got dtype torch.bool")),
    ("r_t str", r_t, ("6", 0.999), Raises(TypeError, "Invalid step: expected a number, array or tensor, got str '6'")),
    ("rho_t beta2 str", rho_t, (6, "0.999"), Raises(TypeError, "Invalid beta2: expected a float, got '0.999'")),
    ("first_rectified_step threshold str", first_rectified_step, (0.999, "5"),
        Raises(TypeError, "Invalid threshold: expected a float, got '5'")),
    ("first_rectified_step threshold None", first_rectified_step, (0.999, None),
        Raises(TypeError, "Invalid threshold: expected a float, got None")),
    ("first_rectified_step threshold int beyond float", first_rectified_step, (0.999, HUGE),
        Raises(ValueError, r"Invalid threshold: ~1e\+400")),
    ("first_rectified_step beta2 str", first_rectified_step, ("0.999",),
        Raises(TypeError, "Invalid beta2: expected a float, got '0.999'")),
    ("variance_adaptive_lr int beyond float", variance_adaptive_lr, (HUGE,), Raises(ValueError, "Invalid rho: inf")),
    ("variance_adaptive_lr_first_order str", variance_adaptive_lr_first_order, ("6",),
        Raises(TypeError, "Invalid rho: expected a number, array or tensor, got str '6'")),
]  # fmt: skip


@pytest.mark.parametrize(("function", "args", "expected"), _rows(RECTIFICATION_TABLE))
def test_rectification_inputs(function, args, expected):
    if isinstance(expected, Raises):
        with pytest.raises(expected.error, match=expected.match):
            function(*args)
        return
    value = function(*args)
    if isinstance(expected, list):
        value = np.asarray(value)
        assert np.isfinite(value).all()
        np.testing.assert_allclose(value, expected, rtol=1e-12)
    else:
        assert type(value) is type(expected)
        assert math.isfinite(value)
        assert value == pytest.approx(expected, rel=1e-12)


# Learning-rate factors of the baselines: (function, args) -> the factor at index 0, or Raises.
WARMUP_TABLE = [
    ("linear_warmup numpy int", linear_warmup, (np.int64(4),), 0.25),
    ("linear_warmup tensor", linear_warmup, (torch.tensor(4.0),), 0.25),
    ("untuned_linear_warmup numpy", untuned_linear_warmup, (np.float32(0.5),), 0.25),
    ("untuned_exponential_warmup tensor", untuned_exponential_warmup, (torch.tensor(0.0),), 1.0 - math.exp(-1.0)),
    ("linear_warmup int beyond float", linear_warmup, (HUGE,),
        Raises(ValueError, r"Invalid warmup_steps: ~1e\+400 \(expected 0 < warmup_steps < inf\)")),
    ("linear_warmup bool", linear_warmup, (True,),
        Raises(TypeError, "Invalid warmup_steps: expected a number, got True")),
    ("untuned_linear_warmup int beyond float", untuned_linear_warmup, (HUGE,),
        Raises(ValueError, r"Invalid beta2: ~1e\+400")),
]  # fmt: skip


@pytest.mark.parametrize(("function", "args", "expected"), _rows(WARMUP_TABLE))
def test_warmup_inputs(function, args, expected):
    if isinstance(expected, Raises):
        with pytest.raises(expected.error, match=expected.match):
            function(*args)
        return
    assert function(*args)(0) == pytest.approx(expected, rel=1e-12)


# GradientHistogramMonitor(subsample=...): the estimate count * subsample must fit in int64.
SUBSAMPLE_TABLE = [
    ("subsample maximum", 2**32, None),
    ("subsample 2**63", 2**63,
        Raises(ValueError, r"Invalid subsample: 9223372036854775808 \(expected 1 <= subsample <= 4294967296\)")),
    ("subsample above maximum", 2**32 + 1, Raises(ValueError, r"Invalid subsample: 4294967297")),
]  # fmt: skip


@pytest.mark.parametrize(("subsample", "expected"), _rows(SUBSAMPLE_TABLE))
def test_gradient_histogram_monitor_subsample(tmp_path, subsample, expected):
    if isinstance(expected, Raises):
        with pytest.raises(expected.error, match=expected.match):
            GradientHistogramMonitor(subsample=subsample)
        return
    monitor = GradientHistogramMonitor(subsample=subsample)
    make_trainer(tmp_path, [monitor], max_steps=1).fit(Model())
    events = read_events(str(tmp_path / "version_0"))
    (histogram,) = events.Histograms("grad/log10_abs")
    zeros = events.Scalars("grad/zeros")[0].value
    # step 0 reads element 0 of each of the 4 parameters, each standing for `subsample` elements: no int64 wrap-around
    assert histogram.histogram_value.num + zeros == 4 * subsample


# Property: for every input they accept, the rectification functions return finite numbers in range.
accepted_steps = st.one_of(
    st.integers(min_value=1, max_value=10**400),
    st.floats(min_value=1.0, max_value=1.7e308).map(math.floor).map(float),
    st.just(math.inf),
)
accepted_beta2s = st.one_of(st.floats(min_value=0.0, max_value=1.0, exclude_max=True), st.just(1.0 - 2**-53))


@settings(max_examples=300, deadline=None)
@given(step=accepted_steps, beta2=accepted_beta2s)
def test_rho_t_and_r_t_are_finite_for_every_accepted_input(step, beta2):
    rho, r = rho_t(step, beta2), r_t(step, beta2)
    assert math.isfinite(rho)
    assert math.isfinite(r)
    assert 1.0 - 1e-9 <= rho <= rho_inf(beta2) * (1 + 1e-12)
    assert 0.0 <= r <= 1.0


@settings(max_examples=150, deadline=None)
@given(beta2=accepted_beta2s, threshold=st.floats(min_value=4.0, max_value=1e18))
def test_first_rectified_step_is_an_int_where_rho_t_crosses_the_threshold(beta2, threshold):
    step = first_rectified_step(beta2, threshold)
    if step is None:
        assert rho_inf(beta2) <= threshold
        return
    assert isinstance(step, int)
    assert step >= 1
    assert rho_t(step, beta2) > threshold
    assert step == 1 or rho_t(step - 1, beta2) <= threshold
