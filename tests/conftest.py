import os

import pytest

# Tests never reach a hub: everything they load is built in code or comes from the registry cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): the 2-layer random Llama built in code."""
    from crossdistill.models import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="module")
def one_thread():
    """The tiny model's ops are microseconds long; on a shared, busy CPU OpenMP barriers between 2 threads cost
    far more than the work. One thread for the module that asks (`pytestmark = usefixtures("one_thread")`)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
