"""pytest hooks: the ``cuda`` marker (registered in setup.cfg) skips its tests on a machine without a GPU.

Run only the GPU tests with ``pytest -m cuda`` (``make test-gpu``); a plain ``pytest`` runs them too where a GPU is
present. The shared helpers live in tests/helpers.py.
"""

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    reason = f"needs a CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__})"
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
