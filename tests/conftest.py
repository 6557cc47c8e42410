import os

import pytest
import torch

# Every run of the suite on one thread, in this process and in every process it starts (the CLI
# in subprocesses, torchrun's ranks): results depend slightly on the thread count, and the tests
# compare runs bitwise (threads=0 takes OMP_NUM_THREADS when set: runtime.py).
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _single_thread():
    """Keep tests deterministic and light on the shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_sessionfinish(session, exitstatus):
    """Remove the folders the helpers made for this session (data files, a saved Llama)."""
    import shutil

    from helpers import SESSION_FOLDERS

    for folder in SESSION_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)
