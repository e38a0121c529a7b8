"""The battery's device choice and tiers.

Tests take the ``device`` fixture: CUDA when present, else CPU. Tests marked ``cuda`` need a GPU
and are skipped without one; the fast tier is everything not marked ``slow``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from albor.data import prepare
from albor.data.synthetic import clean_repos, write_repos
from falsification.settings import MARKERS, TRITON_MISSING


def pytest_configure(config: pytest.Config) -> None:
    # An installed battery runs without the checkout's pyproject.toml, which registers these too.
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _record_claims(request: pytest.FixtureRequest, record_property) -> None:
    """Write each test's claim ids into the JUnit XML, so a failure names the broken claim."""
    for marker in request.node.iter_markers("claim"):
        record_property("claim", marker.args[0])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    no_triton = pytest.mark.skip(reason=TRITON_MISSING)
    has_triton = importlib.util.find_spec("triton") is not None
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "triton" in item.keywords and not has_triton:
            item.add_marker(no_triton)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared data directory (vocab 300, seq_len 16) from a small synthetic corpus of 6 repos in ``../src``."""
    root = tmp_path_factory.mktemp("small-data")
    source = write_repos(root / "src", clean_repos(n_repos=6, files_per_repo=4))
    return prepare(source, root / "data", vocab_size=300, seq_len=16, seed=0)


@pytest.fixture(scope="session")
def random_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir with one checkpoint of a random 2-layer decoder (vocab 520) and a 512-id code tokenizer."""
    from falsification.exports import code_tokenizer, random_decoder, save_run

    return save_run(tmp_path_factory.mktemp("random-run"), random_decoder(), code_tokenizer())


@pytest.fixture(scope="session")
def trained_run(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir of a one-layer, 256-wide decoder trained briefly on the small corpus (for perplexity bounds)."""
    from falsification.exports import train_briefly

    return train_briefly(small_data, tmp_path_factory.mktemp("trained-runs"))
