import os
from pathlib import Path

import pytest

import asr_kd  # noqa: F401  (first: decides MKL's CPU type before torch loads; asr_kd/cpu.py)
import torch

# Tests share a 2-core machine: keep torch to one thread so files don't fight each other.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("ASR_KD_CORPORA", REPO.parent / "shared" / "corpora"))


@pytest.fixture(scope="session")
def corpora() -> Path:
    """The shared real corpora (../shared/corpora beside the checkout, or $ASR_KD_CORPORA)."""
    if not CORPORA.is_dir():
        pytest.skip(f"corpora not found at {CORPORA} (set ASR_KD_CORPORA)")
    return CORPORA
