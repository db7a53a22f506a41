"""RAdam against torch.optim.RAdam, against a plain reference of the paper's Algorithm 2, and its contracts."""

import copy
import math

import pytest
import torch

from lightning_radam import RAdam, RectificationStats

STEPS = 300
TOLERANCE = 1e-12


def make_params(case):
    g = torch.Generator().manual_seed(0)
    params = [
        torch.randn(6, 5, dtype=torch.float64, generator=g),
        torch.randn(5, dtype=torch.float64, generator=g),
        torch.randn(3, 4, dtype=torch.float64, generator=g),  # "frozen" case: no grad for a while
    ]
    if case.get("no_grad_param"):
        params.append(torch.randn(4, dtype=torch.float64, generator=g))
    if case.get("empty_param"):
        params.append(torch.empty(0, dtype=torch.float64))
    if case.get("complex_param"):
        params.append(torch.randn(4, 3, dtype=torch.complex128, generator=g))
    return [p.requires_grad_() for p in params]


def make_groups(params, case):
    if case.get("groups"):
        return [
            {"params": params[:1], "lr": 3e-3, "betas": (0.8, 0.99)},
            {"params": params[1:2], "betas": (0.95, 0.9)},
            {"params": params[2:], "lr": 2e-2},
        ]
    return params


def set_grads(params, t, case):
    """Deterministic gradients of a noisy quadratic that depend on the trajectory."""
    g = torch.Generator().manual_seed(1000 + t)
    for i, p in enumerate(params):
        if (case.get("no_grad_param") and i == 3) or (case.get("frozen") and i == 2 and 40 <= t < 120):
            p.grad = None
            continue
        noise = torch.randn(p.shape, dtype=p.dtype, generator=g)
        p.grad = (1.0 + i) * p.detach() - 0.5 + noise


OPTION_TABLE = [
    ("defaults", {}, {}),
    ("l2_weight_decay", {"weight_decay": 0.1}, {}),
    ("decoupled_weight_decay", {"weight_decay": 0.1, "decoupled_weight_decay": True}, {}),
    ("maximize", {"maximize": True}, {}),
    ("tensor_lr", {"lr": torch.tensor(5e-3)}, {}),
    ("groups_with_betas_and_lr", {}, {"groups": True}),
    ("frozen_layer_skips_and_resumes", {}, {"frozen": True}),
    ("param_without_grad", {}, {"no_grad_param": True}),
    ("empty_param", {}, {"empty_param": True}),
    ("complex_param", {"weight_decay": 0.05}, {"complex_param": True}),
]


def run(optimizer_cls, kwargs, case, steps=STEPS, **extra):
    params = make_params(case)
    optimizer = optimizer_cls(make_groups(params, case), **{"lr": 1e-2, **kwargs, **extra})
    for t in range(steps):
        set_grads(params, t, case)
        optimizer.step()
    return params, optimizer


def max_relative_error(actual, expected):
    worst = 0.0
    for a, e in zip(actual, expected):
        if e.numel():
            worst = max(worst, ((a - e).abs().max() / e.abs().max().clamp_min(1e-300)).item())
    return worst


def state_tensors(optimizer, params):
    return [optimizer.state[p][key] for p in params if p in optimizer.state for key in ("exp_avg", "exp_avg_sq")]


@pytest.mark.parametrize("name,kwargs,case", OPTION_TABLE, ids=[row[0] for row in OPTION_TABLE])
@pytest.mark.parametrize("foreach", [False, True])
def test_radam_matches_torch_radam_in_float64(name, kwargs, case, foreach):
    ours, ours_opt = run(RAdam, kwargs, case, degenerated_to_sgd=True, foreach=foreach)
    theirs, theirs_opt = run(torch.optim.RAdam, kwargs, case, foreach=False)
    assert max_relative_error(ours, theirs) <= TOLERANCE
    assert max_relative_error(state_tensors(ours_opt, ours), state_tensors(theirs_opt, theirs)) <= TOLERANCE
    ours_steps = [ours_opt.state[p]["step"].item() for p in ours if p in ours_opt.state]
    assert ours_steps == [theirs_opt.state[p]["step"].item() for p in theirs if p in theirs_opt.state]


@pytest.mark.parametrize("name,kwargs,case", OPTION_TABLE, ids=[row[0] for row in OPTION_TABLE])
@pytest.mark.parametrize("degenerated_to_sgd", [False, True])
def test_radam_foreach_equals_for_loop(name, kwargs, case, degenerated_to_sgd):
    loop, _ = run(RAdam, kwargs, case, degenerated_to_sgd=degenerated_to_sgd, foreach=False)
    multi, _ = run(RAdam, kwargs, case, degenerated_to_sgd=degenerated_to_sgd, foreach=True)
    assert max_relative_error(multi, loop) <= TOLERANCE


def test_radam_frozen_layer_keeps_its_own_step_count():
    case = {"frozen": True}
    params, optimizer = run(RAdam, {}, case, steps=130)
    assert optimizer.state[params[0]]["step"].item() == 130
    assert optimizer.state[params[2]]["step"].item() == 130 - 80


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


@pytest.mark.parametrize("threshold,degenerated_to_sgd,betas", ALGORITHM_2_TABLE)
@pytest.mark.parametrize("foreach", [False, True])
def test_radam_matches_plain_algorithm_2(threshold, degenerated_to_sgd, betas, foreach):
    start = [0.3, -1.2, 2.0, 0.0, 5.0]
    expected = paper_algorithm_2(start, reference_grad, 60, 0.05, *betas, 1e-8, threshold, degenerated_to_sgd)
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = RAdam(
        [theta], lr=0.05, betas=betas, threshold=threshold, degenerated_to_sgd=degenerated_to_sgd, foreach=foreach
    )
    for t in range(60):
        theta.grad = torch.tensor(reference_grad(theta.tolist(), t), dtype=torch.float64)
        optimizer.step()
    assert theta.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-13)


@pytest.mark.parametrize(
    "betas,threshold,first_rectified",
    [((0.9, 0.999), 5.0, 6), ((0.9, 0.999), 4.0, 5), ((0.9, 0.98), 5.0, 6), ((0.9, 0.6), 5.0, None)],
)
@pytest.mark.parametrize(
    "path", [dict(foreach=False), dict(foreach=True), dict(fused=True)], ids=["for-loop", "foreach", "fused"]
)
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
        assert isinstance(stats.rho_t, float) and isinstance(stats.r_t, float)
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


@pytest.mark.parametrize("kwargs,error,message", INVALID_ARGUMENTS, ids=[str(row[0]) for row in INVALID_ARGUMENTS])
def test_radam_rejects_invalid_hyperparameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        RAdam([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(error, match=message):  # a parameter group is validated like the constructor
        RAdam([{"params": [torch.zeros(2, requires_grad=True)], **kwargs}])


def test_radam_rejects_sparse_gradients():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = RAdam(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="RAdam does not support sparse gradients"):
        optimizer.step()


def test_radam_step_calls_closure_with_grad_enabled():
    theta = torch.tensor([1.0, -2.0], requires_grad=True)
    optimizer = RAdam([theta], lr=0.1, threshold=4.0)

    def closure():
        optimizer.zero_grad()
        loss = (theta**2).sum()
        loss.backward()
        return loss

    losses = [optimizer.step(closure).item() for _ in range(30)]
    assert losses[0] == 5.0 and losses[-1] < losses[0]


def test_radam_state_dict_mid_warmup_reproduces_the_trajectory_exactly():
    case = {"frozen": True}
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
    assert all(torch.equal(a, b) for a, b in zip(resumed, params))
    assert resumed_optimizer.rectification_stats() == optimizer.rectification_stats()


@pytest.mark.parametrize(
    "first,second", [(RAdam, torch.optim.RAdam), (torch.optim.RAdam, RAdam)], ids=["ours_to_torch", "torch_to_ours"]
)
def test_radam_state_dict_migrates_to_and_from_torch(first, second):
    case = {"groups": True}
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
    assert max_relative_error(other_params, params) <= TOLERANCE
    if second is RAdam:  # our keys that torch lacks keep the values given to the constructor
        assert all(group["degenerated_to_sgd"] and group["threshold"] == 5.0 for group in other.param_groups)


def test_radam_takes_torchs_positional_arguments():
    params = make_params({})
    ours = RAdam(params, 1e-2, (0.8, 0.99), 1e-6, 0.1, True)
    theirs = torch.optim.RAdam(params, 1e-2, (0.8, 0.99), 1e-6, 0.1, True)
    keys = ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay")
    assert [ours.param_groups[0][k] for k in keys] == [theirs.param_groups[0][k] for k in keys]


def test_radam_load_state_dict_keeps_its_implementation_and_validates_first():
    case = {}
    params = make_params(case)
    torch_optimizer = torch.optim.RAdam(params, lr=1e-2, foreach=True)
    for t in range(3):
        set_grads(params, t, case)
        torch_optimizer.step()
    ours = RAdam(params, lr=1e-2, fused=True)
    ours.load_state_dict(torch_optimizer.state_dict())  # torch's foreach=True does not clash with our fused=True
    assert ours.param_groups[0]["fused"] is True and ours.param_groups[0]["foreach"] is None
    assert ours.rectification_stats() == [None]
    set_grads(params, 3, case)
    ours.step()
    assert ours.rectification_stats()[0].step == 4

    fresh = RAdam(make_params(case), lr=1e-2)
    bad = copy.deepcopy(ours.state_dict())
    bad["param_groups"][0]["threshold"] = 1.0
    with pytest.raises(ValueError, match="Invalid threshold: 1.0"):
        fresh.load_state_dict(bad)
    assert len(fresh.state) == 0 and fresh.param_groups[0]["threshold"] == 5.0  # nothing was loaded
