"""``torch.compile`` of RAdam's step on every path, and of a function that builds RAdam, against eager mode.

The step plan (step counts, rho_t, r_t) is host-side Python: a graph break, by design, after which the
foreach and for-loop updates are captured (the fused path's one kernel per bucket runs as in eager mode).
With the ``eager`` backend the foreach and fused paths run the very same kernels and match eager mode bit
for bit; on the for-loop path dynamo decomposes ``addcmul_`` and ``addcdiv_`` into a fused multiply-add
(``torch._dynamo.config.enable_dynamo_decompositions``), and inductor generates its own kernels, so there
the match is to float32 round-off.
"""

import pytest
import torch

from lightning_radam import RAdam, RectificationStats

# torch's own import of its jit while compiling, not ours
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

STEPS = 8  # 5 unrectified steps (threshold 5), then rectified ones
PATHS = {"fused": {}, "foreach": dict(foreach=True), "for_loop": dict(foreach=False)}

# (name, RAdam keyword arguments, parameter dtypes)
CASES = [
    ("defaults", {}, [torch.float32, torch.float32]),
    ("decoupled_weight_decay", dict(weight_decay=0.1, decoupled_weight_decay=True), [torch.float32, torch.float32]),
    ("mixed_float32_float16", {}, [torch.float32, torch.float16, torch.float32]),
    ("l2_maximize_sgd", dict(weight_decay=0.1, maximize=True, degenerated_to_sgd=True), [torch.float32, torch.float16]),
]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch.compiler.reset()  # no cache entries or recompile counts carried over from another test
    yield
    torch.compiler.reset()


@pytest.fixture(scope="session")
def inductor_cache_dir(tmp_path_factory):
    """A cache of this session's own: inductor's FX graph cache does not tell ATEN CPU capabilities apart (torch 2.13),
    so code a run generated for AVX2 or AVX-512 fails to compile under ATEN_CPU_CAPABILITY=default."""
    return tmp_path_factory.mktemp(f"torchinductor-{torch.backends.cpu.get_cpu_capability()}")


@pytest.fixture
def inductor_cache(inductor_cache_dir, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache_dir))


class CountingBackend:
    """The ``eager`` backend, counting the graphs it is given (a compiled step that captured nothing tests nothing)."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def _train(dtypes, kwargs, backend=None):
    """STEPS steps on cos(theta) + noise gradients; a float16 parameter's first element always gets 0."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=generator).to(dtype)) for dtype in dtypes]
    optimizer = RAdam(params, lr=1e-2, **kwargs)
    step = optimizer.step if backend is None else torch.compile(optimizer.step, backend=backend)
    for _ in range(STEPS):
        for p in params:
            noise = 0.1 * torch.randn(p.shape, generator=generator)
            p.grad = (torch.cos(p.detach().float()) + noise).to(p.dtype)
            if p.dtype == torch.float16:
                p.grad[0, 0] = 0
        step()
    return params, optimizer


def _state(params, optimizer):
    return [
        (p.detach(), *(optimizer.state[p][key] for key in ("exp_avg", "exp_avg_sq", "step"))) for p in params
    ], optimizer.rectification_stats()


def _assert_round_off(compiled, eager):
    """Equal to float32 round-off: a few ulps of 2^-23 after STEPS steps (float16 tensors: 2 ulps of 2^-10)."""
    rtol = 1e-6 if compiled.dtype == torch.float32 else 2e-3
    torch.testing.assert_close(compiled, eager, rtol=rtol, atol=1e-9)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("name", "kwargs", "dtypes"), CASES, ids=[name for name, _, _ in CASES])
def test_compiled_step_matches_eager(name, kwargs, dtypes, path):
    backend = CountingBackend()
    compiled_tensors, compiled_stats = _state(*_train(dtypes, {**kwargs, **PATHS[path]}, backend))
    eager_tensors, eager_stats = _state(*_train(dtypes, {**kwargs, **PATHS[path]}))
    assert backend.graphs > 0  # something was captured, not only run eagerly
    assert compiled_stats == eager_stats
    assert compiled_stats[0].rectified
    for compiled, eager in zip(compiled_tensors, eager_tensors, strict=True):
        for c, e in zip(compiled, eager, strict=True):
            assert torch.isfinite(c).all()  # float16 zeros stay finite (eps = 1e-8 is 0 in float16)
            if path == "for_loop":
                _assert_round_off(c, e)
            else:
                assert torch.equal(c, e)


@pytest.mark.parametrize(
    ("path", "name", "kwargs", "dtypes"),
    [("fused", *CASES[2]), ("foreach", *CASES[1])],
    ids=["fused-mixed_float32_float16", "foreach-decoupled_weight_decay"],
)
@pytest.mark.usefixtures("inductor_cache")
def test_compiled_step_with_inductor_matches_eager(path, name, kwargs, dtypes):
    compiled_tensors, compiled_stats = _state(*_train(dtypes, {**kwargs, **PATHS[path]}, "inductor"))
    eager_tensors, eager_stats = _state(*_train(dtypes, {**kwargs, **PATHS[path]}))
    assert compiled_stats == eager_stats
    for compiled, eager in zip(compiled_tensors, eager_tensors, strict=True):
        for c, e in zip(compiled, eager, strict=True):
            assert torch.isfinite(c).all()
            _assert_round_off(c, e)


def test_radam_built_and_stepped_inside_a_compiled_function():
    def build_and_step(params):
        optimizer = RAdam(params, lr=1e-2, unscale_in_step=True)
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        return optimizer

    backend = CountingBackend()
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(2)]
    optimizer = torch.compile(build_and_step, backend=backend)(params)
    reference = build_and_step([torch.nn.Parameter(torch.zeros(3)) for _ in range(2)])
    assert optimizer.rectification_stats() == reference.rectification_stats()
    assert optimizer.rectification_stats() == [RectificationStats(step=1, rho_t=1.0, r_t=0.0, rectified=False)]
    for _ in range(STEPS - 1):  # the optimizer built under torch.compile keeps stepping as the eager one
        for p in params + reference.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        optimizer.step()
        reference.step()
    assert optimizer.rectification_stats() == reference.rectification_stats()
    assert all(torch.equal(p, q) for p, q in zip(params, reference.param_groups[0]["params"], strict=True))
    assert optimizer.state_dict()["param_groups"] == reference.state_dict()["param_groups"]
