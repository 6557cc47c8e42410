import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Keep tests deterministic and light on the shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
