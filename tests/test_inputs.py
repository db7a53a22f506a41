"""What every public entry point accepts and rejects, as tables: one table and one test per entry point.

A rejected input raises a one-line TypeError (wrong kind) or ValueError (out of range) naming the argument and
the value; an accepted input behaves exactly as its plain Python equivalent.
"""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from lightning_radam import Adam2k, RAdam

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


# optimizer.add_param_group(group): a rejected group leaves the optimizer as it was, and a corrected retry succeeds.
ADD_PARAM_GROUP_TABLE = [
    ("RAdam lr -1", RAdam, {"lr": -1.0}, Raises(ValueError, r"Invalid learning rate: -1.0")),
    ("RAdam threshold 2", RAdam, {"threshold": 2}, Raises(ValueError, r"Invalid threshold: 2")),
    ("RAdam nonfinite_grad nope", RAdam, {"nonfinite_grad": "nope"},
        Raises(ValueError, "Invalid nonfinite_grad: 'nope'")),
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
