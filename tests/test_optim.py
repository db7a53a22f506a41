"""RAdam against torch.optim.RAdam, against a plain reference of the paper's Algorithm 2, and its contracts."""

import copy
import math
import pickle
import re

import pytest
import torch
from helpers import (
    CASE,
    FROZEN_INDEX,
    FROZEN_STEPS,
    PATHS,
    TOLERANCES,
    make_groups,
    make_params,
    option_table,
    relative_error,
    run,
    set_grads,
    state_tensors,
)

from lightning_radam import RAdam, RectificationStats

STEPS = 300  # long enough for a parameter frozen at FROZEN_STEPS to resume well inside the rectified phase
TOLERANCE = TOLERANCES[torch.float64]


@pytest.mark.parametrize(("case", "path"), option_table(lambda case: case.torch_comparable, paths=True))
def test_radam_matches_torch_radam_in_float64(case, path):
    ours = run(RAdam, case, STEPS, degenerated_to_sgd=True, **path)
    theirs = run(torch.optim.RAdam, case, STEPS, foreach=False)
    assert relative_error(ours.params, theirs.params) <= TOLERANCE
    ours_state = state_tensors(ours.optimizer, ours.params)
    assert relative_error(ours_state, state_tensors(theirs.optimizer, theirs.params)) <= TOLERANCE
    assert ours.step_counts() == theirs.step_counts()


# every case with degenerated_to_sgd False and True (a case that sets it keeps its own value)
SGD_TABLE = [
    pytest.param(row.values[0], sgd, id=f"{row.id}-sgd{sgd}")
    for row in option_table()
    for sgd in (False, True)
    if row.values[0].kwargs.get("degenerated_to_sgd", sgd) == sgd
]


@pytest.mark.parametrize(("case", "degenerated_to_sgd"), SGD_TABLE)
def test_radam_foreach_equals_for_loop(case, degenerated_to_sgd):
    loop = run(RAdam, case, STEPS, degenerated_to_sgd=degenerated_to_sgd, foreach=False)
    multi = run(RAdam, case, STEPS, degenerated_to_sgd=degenerated_to_sgd, foreach=True)
    assert relative_error(multi.params, loop.params) <= TOLERANCE


def test_radam_frozen_layer_keeps_its_own_step_count():
    result = run(RAdam, CASE["frozen_then_resumed"], steps=130)
    assert result.optimizer.state[result.params[0]]["step"].item() == 130
    assert result.optimizer.state[result.params[FROZEN_INDEX]]["step"].item() == 130 - len(FROZEN_STEPS)


def paper_algorithm_2(theta, grad_fn, steps, lr, beta1, beta2, eps, threshold, degenerated_to_sgd):
    """Algorithm 2 of Liu et al. (2020), written plainly with Python floats, one element at a time."""
    theta = list(theta)
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    rho_inf = 2 / (1 - beta2) - 1
    for t in range(1, steps + 1):
        g = grad_fn(theta, t - 1)
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            m_hat = m[i] / (1 - beta1**t)
            rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
            if rho_t > threshold:
                l_t = math.sqrt(1 - beta2**t) / (math.sqrt(v[i]) + eps)
                r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                theta[i] -= lr * r_t * m_hat * l_t
            elif degenerated_to_sgd:
                theta[i] -= lr * m_hat
    return theta


def reference_grad(theta, t):
    return [math.sin(3.0 * x + 0.1 * t) + 0.3 * x for x in theta]


ALGORITHM_2_TABLE = [
    # threshold, degenerated_to_sgd, betas
    (5.0, False, (0.9, 0.999)),  # our default: skip below 5
    (4.0, True, (0.9, 0.999)),  # the paper's rule: momentum SGD below 4
    (4.0, False, (0.9, 0.999)),  # both of ours together: skip below 4
    (5.0, True, (0.9, 0.98)),
    (5.0, False, (0.9, 0.6)),  # rho_inf = 4: never rectified, never updated
    (4.0, True, (0.5, 0.7)),  # rho_inf = 5.67: rectified from a late step
]


@pytest.mark.parametrize(("threshold", "degenerated_to_sgd", "betas"), ALGORITHM_2_TABLE)
@pytest.mark.parametrize("path", PATHS)
def test_radam_matches_plain_algorithm_2(threshold, degenerated_to_sgd, betas, path):
    # Both take the gradients of the reference's trajectory. Fed back from each one's own theta, a one-ulp difference
    # at step 45 (betas (0.5, 0.7)) grew to 2e-11 by step 60 where a kernel rounded differently from Python's floats
    # (ATEN_CPU_CAPABILITY=default): that tested the platform's rounding, not the update.
    start = [0.3, -1.2, 2.0, 0.0, 5.0]
    grads = []

    def recorded(theta, t):
        grads.append(reference_grad(theta, t))
        return grads[-1]

    expected = paper_algorithm_2(start, recorded, 60, 0.05, *betas, 1e-8, threshold, degenerated_to_sgd)
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = RAdam([theta], lr=0.05, betas=betas, threshold=threshold, degenerated_to_sgd=degenerated_to_sgd, **path)
    for grad in grads:
        theta.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
    assert theta.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize(
    ("betas", "threshold", "first_rectified"),
    [((0.9, 0.999), 5.0, 6), ((0.9, 0.999), 4.0, 5), ((0.9, 0.98), 5.0, 6), ((0.9, 0.6), 5.0, None)],
)
@pytest.mark.parametrize("path", PATHS)
def test_radam_rectification_stats_and_skipped_updates(betas, threshold, first_rectified, path):
    theta = torch.ones(3, dtype=torch.float64, requires_grad=True)
    # decoupled weight decay too is skipped in an unrectified step: the parameter is untouched
    optimizer = RAdam(
        [theta], lr=0.1, betas=betas, threshold=threshold, weight_decay=0.5, decoupled_weight_decay=True, **path
    )
    assert optimizer.rectification_stats() == [None]
    for t in range(1, 9):
        before = theta.detach().clone()
        theta.grad = torch.ones(3, dtype=torch.float64)
        optimizer.step()
        stats = optimizer.rectification_stats()[0]
        rectified = first_rectified is not None and t >= first_rectified
        assert isinstance(stats, RectificationStats)
        assert (stats.step, stats.rectified) == (t, rectified)
        assert isinstance(stats.rho_t, float)
        assert isinstance(stats.r_t, float)
        assert torch.equal(theta.detach(), before) != rectified  # unrectified steps leave theta untouched


INVALID_ARGUMENTS = [
    ({"lr": -1e-3}, ValueError, "Invalid learning rate: -0.001"),
    ({"lr": float("nan")}, ValueError, "Invalid learning rate: nan"),
    ({"lr": float("inf")}, ValueError, "Invalid learning rate: inf"),
    ({"lr": torch.tensor([1e-3, 2e-3])}, ValueError, "Invalid learning rate: a Tensor lr must have 1 element"),
    ({"lr": "0.1"}, TypeError, "Invalid learning rate: expected a float"),
    ({"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ({"betas": (-0.1, 0.999)}, ValueError, "Invalid beta parameter at index 0: -0.1"),
    ({"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0"),
    ({"betas": (0.9, float("nan"))}, ValueError, "Invalid beta parameter at index 1: nan"),
    ({"betas": 0.9}, TypeError, "Invalid betas: expected a pair of floats, got 0.9"),
    ({"betas": (0.9,)}, TypeError, r"Invalid betas: expected a pair of floats, got \(0.9,\)"),
    ({"betas": (0.9, "0.99")}, TypeError, "Invalid beta parameter at index 1: expected a float"),
    ({"eps": -1e-8}, ValueError, "Invalid eps: -1e-08"),
    ({"eps": float("nan")}, ValueError, "Invalid eps: nan"),
    ({"eps": 0.0}, ValueError, r"Invalid eps: 0.0 \(expected 0 < eps < inf\)"),
    ({"weight_decay": -0.1}, ValueError, "Invalid weight_decay: -0.1"),
    ({"weight_decay": None}, TypeError, "Invalid weight_decay: expected a float, got None"),
    ({"threshold": 3.9}, ValueError, "Invalid threshold: 3.9"),
    ({"threshold": float("inf")}, ValueError, "Invalid threshold: inf"),
    ({"threshold": float("nan")}, ValueError, "Invalid threshold: nan"),
    ({"decoupled_weight_decay": "yes"}, TypeError, "Invalid decoupled_weight_decay: expected a bool, got 'yes'"),
    ({"degenerated_to_sgd": 1}, TypeError, "Invalid degenerated_to_sgd: expected a bool, got 1"),
    ({"maximize": None}, TypeError, "Invalid maximize: expected a bool, got None"),
    ({"foreach": "auto"}, TypeError, "Invalid foreach: expected None or a bool, got 'auto'"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"), INVALID_ARGUMENTS, ids=[str(row[0]) for row in INVALID_ARGUMENTS]
)
def test_radam_rejects_invalid_hyperparameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        RAdam([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(error, match=message):  # a parameter group is validated like the constructor
        RAdam([{"params": [torch.zeros(2, requires_grad=True)], **kwargs}])


@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"fused": True}])
def test_radam_rejects_sparse_gradients_before_updating_anything(path):
    dense, embedding = torch.nn.Linear(3, 1), torch.nn.Embedding(10, 3, sparse=True)
    optimizer = RAdam(
        [{"params": dense.named_parameters()}, {"params": embedding.named_parameters()}],
        lr=0.1, degenerated_to_sgd=True, **path,
    )  # fmt: skip  # degenerated_to_sgd: the first step already moves the dense parameters
    dense(embedding(torch.tensor([1, 2]))).sum().backward()
    before = [p.detach().clone() for p in dense.parameters()]
    with pytest.raises(
        RuntimeError,
        match=re.escape(
            "RAdam does not support sparse gradients: parameter 0 ('weight') of parameter group 1 has one;"
            " nothing was updated"
        ),
    ):
        optimizer.step()
    assert all(torch.equal(p, b) for p, b in zip(dense.parameters(), before, strict=True))
    assert optimizer.rectification_stats() == [None, None]


def test_radam_step_calls_closure_with_grad_enabled():
    theta = torch.tensor([1.0, -2.0], requires_grad=True)
    optimizer = RAdam([theta], lr=0.1, threshold=4.0)

    def closure():
        optimizer.zero_grad()
        loss = (theta**2).sum()
        loss.backward()
        return loss

    losses = [optimizer.step(closure).item() for _ in range(30)]
    assert losses[0] == 5.0
    assert losses[-1] < losses[0]


def test_radam_state_dict_mid_warmup_reproduces_the_trajectory_exactly():
    case = CASE["frozen_then_resumed"]
    params = make_params(case)
    optimizer = RAdam(params, lr=1e-2, weight_decay=0.01)
    for t in range(3):
        set_grads(params, t, case)
        optimizer.step()
    saved_params = [p.detach().clone() for p in params]
    saved_state = copy.deepcopy(optimizer.state_dict())
    for t in range(3, 60):
        set_grads(params, t, case)
        optimizer.step()

    resumed = [p.clone().requires_grad_() for p in saved_params]
    resumed_optimizer = RAdam(resumed, lr=1e-2, weight_decay=0.01)
    resumed_optimizer.load_state_dict(saved_state)
    for t in range(3, 60):
        set_grads(resumed, t, case)
        resumed_optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(resumed, params, strict=True))
    assert resumed_optimizer.rectification_stats() == optimizer.rectification_stats()


@pytest.mark.parametrize(
    ("first", "second"),
    [(RAdam, torch.optim.RAdam), (torch.optim.RAdam, RAdam)],
    ids=["ours_to_torch", "torch_to_ours"],
)
def test_radam_state_dict_migrates_to_and_from_torch(first, second):
    case = CASE["groups"]
    params = make_params(case)
    extra = {"degenerated_to_sgd": True} if first is RAdam else {}
    optimizer = first(make_groups(params, case), lr=1e-2, **extra)
    for t in range(4):  # inside the unrectified phase
        set_grads(params, t, case)
        optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())
    other_params = [p.detach().clone().requires_grad_() for p in params]
    extra = {"degenerated_to_sgd": True} if second is RAdam else {}
    other = second(make_groups(other_params, case), lr=1e-2, **extra)
    other.load_state_dict(saved)
    for t in range(4, 40):
        set_grads(params, t, case)
        set_grads(other_params, t, case)
        optimizer.step()
        other.step()
    assert relative_error(other_params, params) <= TOLERANCE
    if second is RAdam:  # our keys that torch lacks keep the values given to the constructor
        assert all(group["degenerated_to_sgd"] and group["threshold"] == 5.0 for group in other.param_groups)


def test_radam_takes_torchs_positional_arguments():
    params = make_params(CASE["defaults"])
    ours = RAdam(params, 1e-2, (0.8, 0.99), 1e-6, 0.1, True)
    theirs = torch.optim.RAdam(params, 1e-2, (0.8, 0.99), 1e-6, 0.1, True)
    keys = ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay")
    assert [ours.param_groups[0][k] for k in keys] == [theirs.param_groups[0][k] for k in keys]


def test_radam_load_state_dict_keeps_its_implementation_and_validates_first():
    case = CASE["defaults"]
    params = make_params(case)
    torch_optimizer = torch.optim.RAdam(params, lr=1e-2, foreach=True)
    for t in range(3):
        set_grads(params, t, case)
        torch_optimizer.step()
    ours = RAdam(params, lr=1e-2, fused=True)
    ours.load_state_dict(torch_optimizer.state_dict())  # torch's foreach=True does not clash with our fused=True
    assert ours.param_groups[0]["fused"] is True
    assert ours.param_groups[0]["foreach"] is None
    assert ours.rectification_stats() == [None]
    set_grads(params, 3, case)
    ours.step()
    assert ours.rectification_stats()[0].step == 4

    fresh = RAdam(make_params(case), lr=1e-2)
    bad = copy.deepcopy(ours.state_dict())
    bad["param_groups"][0]["threshold"] = 1.0
    with pytest.raises(ValueError, match="Invalid threshold: 1.0"):
        fresh.load_state_dict(bad)
    assert len(fresh.state) == 0
    assert fresh.param_groups[0]["threshold"] == 5.0  # nothing was loaded


@pytest.mark.parametrize("copy_optimizer", [copy.deepcopy, lambda opt: pickle.loads(pickle.dumps(opt))])  # noqa: S301 (our own bytes)
def test_a_copied_optimizer_keeps_its_rectification_stats_and_steps_alike(copy_optimizer):
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    optimizer = RAdam([theta], lr=0.1, betas=(0.9, 0.9))
    for _ in range(7):
        theta.grad = theta.detach() * 2.0
        optimizer.step()
    copied = copy_optimizer(optimizer)
    assert copied.rectification_stats() == optimizer.rectification_stats()
    assert copied.rectification_stats()[0].step == 7
    copied_theta = copied.param_groups[0]["params"][0]
    for opt, p in ((optimizer, theta), (copied, copied_theta)):
        p.grad = torch.tensor([0.5, 0.25], dtype=torch.float64)
        opt.step()
    assert torch.equal(copied_theta, theta)
    assert copied.rectification_stats() == optimizer.rectification_stats()
