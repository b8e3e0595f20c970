import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_small():
    """A stratified 400/200 subset of scikit-learn's digits (8x8, 1 channel, 10 classes)."""
    from kdlib.data import load_dataset

    return load_dataset("digits").subset(n_train=400, n_test=200, seed=0)


@pytest.fixture(scope="session")
def gmm_small():
    from kdlib.data import load_dataset

    return load_dataset("gmm10", n_train=1000, n_test=500)


@pytest.fixture()
def one_thread():
    """Tiny models train several times faster on one thread than on two when the machine
    is shared (threads wait on each other); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
