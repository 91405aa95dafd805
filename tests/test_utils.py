import torch

import den
from den.train._runner import TRAINING_THREADS, training_threads


def test_training_threads_restores_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS + 1)
    try:
        with training_threads(torch.device("cpu")):
            assert torch.get_num_threads() == TRAINING_THREADS
        assert torch.get_num_threads() == TRAINING_THREADS + 1
    finally:
        torch.set_num_threads(before)


def test_tools_leave_thread_setting_alone(small):
    before = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS + 1)
    try:
        den.tl.embed(small, n_epochs=2, progress_bar=False)
        den.tl.cluster(small, head_epochs=1, finetune_epochs=1, progress_bar=False)
        assert torch.get_num_threads() == TRAINING_THREADS + 1
    finally:
        torch.set_num_threads(before)
