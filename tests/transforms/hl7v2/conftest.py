"""Fixtures for the HL7 v2 tests: the project's synthetic samples and the shared third-party corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
SAMPLES = HERE.parents[2] / "samples" / "hl7v2"  # tests/samples/hl7v2
CORPUS = HERE.parents[3] / ".." / "shared" / "corpus" / "hl7v2"  # ../shared/corpus/hl7v2 from the repo root


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def sample():
    """``sample("adt_a01.hl7")`` → the bytes of a synthetic sample message."""

    def read(name: str) -> bytes:
        return (SAMPLES / name).read_bytes()

    return read


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not here: {CORPUS}")
    return CORPUS
