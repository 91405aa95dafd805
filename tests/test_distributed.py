"""Several devices: torch.distributed data parallelism (2 CPU ranks over gloo)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import den
from den._pairs import PairSampler, rank_slice
from den.train import rank_generator


@pytest.mark.parametrize("n", [1, 2, 7, 512])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_slices_cover_a_batch_once(n, world):
    if n < world:
        pytest.skip("batches smaller than the world are skipped")
    parts = [np.arange(n)[rank_slice(n, r, world)] for r in range(world)]
    assert np.array_equal(np.concatenate(parts), np.arange(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _sampler(seed=0, batch_size=64):
    rng = np.random.default_rng(0)
    near = (rng.integers(0, 100, 1000), rng.integers(0, 100, 1000))
    generator = torch.Generator().manual_seed(seed)
    return PairSampler(near, batch_size=batch_size, n_far=8, far_rule="shared", generator=generator)


def test_two_ranks_take_one_process_batches_of_twice_the_size():
    one = [b.rows for b in _sampler(batch_size=128).epoch()]
    parts = [list(_sampler().epoch(rank, 2)) for rank in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(one) == _sampler().steps_per_epoch(2) == 8
    assert all(len(b.rows) == 2 * 64 for b in parts[0][:-1])  # every rank: batch_size pairs a step
    for whole, a, b in zip(one, parts[0], parts[1], strict=True):
        half_a, half_b = len(a.rows) // 2, len(b.rows) // 2
        # the near pairs of the two ranks' parts are exactly the one-process batch
        ends = torch.cat([a.rows[:half_a], b.rows[:half_b], a.rows[half_a:], b.rows[half_b:]])
        assert torch.equal(ends, whole)


def test_rank_generators_differ_by_rank_and_repeat_by_seed():
    draw = lambda seed, rank: torch.rand(4, generator=rank_generator(seed, rank))
    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 0), draw(0, 1))
    assert not torch.equal(draw(0, 0), draw(1, 0))


def test_sampler_pickles_with_its_generator_state():
    sampler = _sampler()
    next(iter(sampler.epoch()))  # move the generator on
    copy = pickle.loads(pickle.dumps(sampler))
    assert [b.rows.tolist() for b in copy.epoch()] == [b.rows.tolist() for b in sampler.epoch()]


def _knn(emb, labels):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return cross_val_score(KNeighborsClassifier(15), emb, labels, cv=5).mean()


@pytest.fixture(scope="module")
def two_rank_fits():
    adata = den.datasets.synthetic(1500, 200, 5, random_state=3)
    X, y = adata.X, adata.obs["group"].to_numpy()
    kw = {"cluster": False, "n_epochs": 20, "random_state": 0}
    one = den.DEN(**kw).fit(X)
    two = [den.DEN(devices=2, **kw).fit(X) for _ in range(2)]
    return X, y, one, two


def test_two_ranks_learn_the_map_of_one(two_rank_fits):
    X, y, one, (two, _) = two_rank_fits
    before = _knn(den.DEN(cluster=False, n_epochs=1, learning_rate=1e-9).fit(X).embedding_, y)
    assert _knn(two.embedding_, y) > max(before + 0.2, 0.9)
    assert abs(_knn(two.embedding_, y) - _knn(one.embedding_, y)) <= 0.02
    assert len(two.history_) == 20 and two.history_[-1] < two.history_[0]
    # the caller's model holds the trained weights: transform gives the training map
    np.testing.assert_allclose(two.transform(X), two.embedding_, atol=1e-5)


def test_two_ranks_reproduce_for_a_seed(two_rank_fits):
    _, _, one, (a, b) = two_rank_fits
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    assert not np.allclose(a.embedding_, one.embedding_)  # two ranks are a different run than one


def test_embed_records_devices_and_epoch_times(small):
    den.tl.embed(small, devices=2, n_epochs=3, progress_bar=False)
    entry = small.uns["den"]
    assert entry["params"]["devices"] == 2 and entry["fit"]["devices"] == 2
    assert entry["fit"]["learning_rate"] == pytest.approx(entry["params"]["learning_rate"] * 2)
    assert len(entry["history"]["seconds"]) == 3 and (entry["history"]["seconds"] > 0).all()


@pytest.mark.parametrize("devices", [0, -1])
def test_bad_devices(small, devices):
    with pytest.raises(ValueError, match="devices"):
        den.tl.embed(small, devices=devices)
    assert "den" not in small.uns


def test_devices_need_gpus():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        den.DEN(devices=2, device="cuda").fit(np.random.default_rng(0).normal(size=(50, 5)))


SCRIPT = """
import numpy as np, torch.distributed as dist, den
dist.init_process_group("gloo")
X = den.datasets.synthetic(400, 60, 3, random_state=0).X
est = den.DEN(cluster=False, n_epochs=5, random_state=0).fit(X)
np.save(f"{out}/rank{dist.get_rank()}.npy", est.embedding_)
dist.destroy_process_group()
"""


def test_torchrun_ranks_train_one_model(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("{out}", str(tmp_path)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (np.load(tmp_path / f"rank{r}.npy") for r in range(2))
    np.testing.assert_array_equal(a, b)  # every rank ends with the same weights
    assert np.ptp(a, axis=0).min() > 0.1


def test_two_ranks_train_the_label_head(two_rank_fits):
    X, y, _, _ = two_rank_fits
    given = np.where(np.arange(len(y)) % 10 == 0, y, None)  # 10 % labelled: some batches have no label
    est = den.DEN(devices=2, cluster=False, n_epochs=10, random_state=0, batch_size=64).fit(X, given)
    assert (est.predict_labels(X) == y).mean() > 0.9


def test_cpu_ranks_average_weights_every_few_steps(tmp_path):
    from torch.nn.parallel import DistributedDataParallel

    from den.train._distributed import LOCAL_STEPS, local_sgd

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        net = DistributedDataParallel(torch.nn.Linear(3, 2))
        adam = torch.optim.Adam(net.parameters())
        assert local_sgd([net], adam, device=torch.device("cuda"), warmup=5)[0] is adam  # GPUs: DDP every step
        wrapped, _ = local_sgd([net], adam, device=torch.device("cpu"), warmup=5)
        assert wrapped.averager.period == LOCAL_STEPS > 1 and wrapped.averager.warmup_steps == 5
    finally:
        torch.distributed.destroy_process_group()


def test_data_parallel_wrappers_are_freed_before_the_group_ends(tmp_path, monkeypatch):
    """A DDP wrapper left for the garbage collector can be freed at interpreter exit, after the group is gone:
    gloo's threads then abort the process (SIGABRT, "terminate called without an active exception")."""
    import gc

    from torch.nn.parallel import DistributedDataParallel

    from den.train import _distributed

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    monkeypatch.setattr(_distributed, "rank_world", lambda: (0, 2))  # the runner trains as rank 0 of 2
    gc.disable()  # only reference counting frees objects: no collection may hide a cycle
    try:
        X = den.datasets.synthetic(200, 20, 2, random_state=0).X
        est = den.DEN(cluster=False, n_epochs=2, random_state=0).fit(X)
        alive = [o for o in gc.get_objects() if isinstance(o, DistributedDataParallel)]
    finally:
        gc.enable()
        torch.distributed.destroy_process_group()
    assert not alive
    assert not any(isinstance(m, DistributedDataParallel) for m in est.model_.encoder.modules())
