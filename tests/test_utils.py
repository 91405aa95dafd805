import numpy as np
import pytest
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


def test_training_rows_stratified_by_batch():
    """Each batch gives its share of the sample, at least MIN_SAMPLE_PER_BATCH cells (all of a smaller batch)."""
    from den._utils import MIN_SAMPLE_PER_BATCH, training_rows

    batches = np.array(["a"] * 900 + ["b"] * 90 + ["c"] * 10)[np.random.default_rng(1).permutation(1000)]
    rows = training_rows(1000, 100, 0, batches)
    assert np.all(np.diff(rows) > 0)
    names, counts = np.unique(batches[rows], return_counts=True)
    assert dict(zip(names, counts, strict=True)) == {"a": 90, "b": MIN_SAMPLE_PER_BATCH, "c": 10}
    np.testing.assert_array_equal(rows, training_rows(1000, 100, 0, batches))  # one seed, one sample
    assert not np.array_equal(rows, training_rows(1000, 100, 1, batches))
    assert training_rows(1000, 100, 0, None).size == 100  # without batches: exactly fit_cells
    assert training_rows(900, 300, 0, np.repeat(["a", "b", "c"], 300)).size == 300  # the shares sum to fit_cells
    assert training_rows(3000, 200, 0, np.repeat(["a", "b", "c"], 1000)).size == 200  # 66.7 each: 67, 67, 66
    assert training_rows(80, 60, 0, np.repeat(["a", "b"], 40)) is None  # 50 a batch keeps every cell: the whole fit


def test_hidden_progress_bar_does_not_import_tqdm_auto(monkeypatch):
    """tqdm.auto warns in a notebook without ipywidgets even for a hidden bar: hidden bars use plain tqdm."""
    import sys
    import types

    from den._utils import progress

    broken = types.ModuleType("tqdm.auto")
    broken.__getattr__ = lambda name: pytest.fail("tqdm.auto was imported for a hidden bar")
    monkeypatch.setitem(sys.modules, "tqdm.auto", broken)
    bar = progress(range(3), desc="hidden", enabled=False)
    assert list(bar) == [0, 1, 2]
    bar.set_postfix(loss="1.0")  # what the runner calls on a bar: works on a hidden one too


def test_too_many_neighbours_warns_with_the_number_used():
    from den._embedding import effective_neighbors

    with pytest.warns(UserWarning, match=r"n_neighbors=50 is too large for 20 cells; using 4\.$"):
        assert effective_neighbors(50, 20) == 4
