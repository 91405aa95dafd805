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


def test_progress_bar_redraws_at_its_own_pace(capsys):
    """The epoch's loss is shown, but not by a redraw per epoch (a log file would get a line per epoch)."""
    tiny = den.datasets.synthetic(80, 30, 3, random_state=0)  # one step an epoch: ~200 epochs a second
    den.tl.embed(tiny, n_epochs=200, progress_bar=True)
    err = capsys.readouterr().err
    assert "DEN embedding" in err and "loss=" in err
    assert err.count("loss=") < 100  # tqdm's 0.1 s refresh interval, not 200 redraws
