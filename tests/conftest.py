"""Shared fixtures: small networks with known structure, and Chromium launch settings."""

from __future__ import annotations

import os
import pathlib
import shutil

# The Score-* cost estimate times a probe forward, which follows the machine's load: a busy CI
# machine must not refuse the suite's small runs (tests/test_budget.py passes its own limits).
os.environ.setdefault("FAMWIDGET_MAX_SECONDS", "86400")

import pytest
import torch
from torch import nn

from famwidget.bench.jupyter import CHROMIUM_ARGS, jupyterlab


class TinyEmbedding(nn.Module):
    """conv → BN → ReLU → conv → ReLU (the "features" layer) → GAP → Linear: an embedding net."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(12, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


@pytest.fixture
def tiny_embedding() -> TinyEmbedding:
    torch.manual_seed(0)
    model = TinyEmbedding()
    with torch.no_grad():  # non-trivial BN statistics, so eval and train modes differ
        model.body[1].running_mean.uniform_(-0.5, 0.5)
        model.body[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one thread avoids oversubscribing the few shared cores of CI."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(5, 3, 16, 16)


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict:
    """pytest-playwright: Debian's Chromium, never a downloaded browser."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed; `make setup` installs it")
    return {"executable_path": path, "headless": True, "args": CHROMIUM_ARGS}


ARTIFACTS = pathlib.Path(__file__).parent.parent / "artifacts" / "screenshots"


@pytest.fixture(scope="session")
def screenshots() -> pathlib.Path:
    """Where the browser tests save a screenshot of each state (kept as CI artifacts)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def jupyter_root(tmp_path_factory) -> pathlib.Path:
    """The server's folder: a copy of notebooks/ (tests may add notebooks of their own)."""
    root = tmp_path_factory.mktemp("jupyter-root")
    for nb in (pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    return root


@pytest.fixture(scope="session")
def jupyter_server(jupyter_root):
    """A JupyterLab server (it also serves Notebook 7) over ``jupyter_root``."""
    with jupyterlab(jupyter_root) as url:
        yield url
