"""Synthetic Criteo trace: deterministic, Criteo-shaped, power-law, local when asked, learnable."""

from __future__ import annotations

import numpy as np
import pytest

from herald_tf.data import CRITEO_CARDINALITIES, CriteoReader, SyntheticConfig, SyntheticCriteo
from herald_tf.data.synthetic import main


def test_cardinalities_sum_to_criteo_kaggle() -> None:
    assert len(CRITEO_CARDINALITIES) == 26 and sum(CRITEO_CARDINALITIES) == 33_762_577
    cards = SyntheticConfig(scale=0.05).cardinalities
    assert 1_680_000 < sum(cards) < 1_700_000


def test_same_seed_same_trace_and_prefixes_do_not_depend_on_length() -> None:
    a = SyntheticCriteo(SyntheticConfig(seed=3, scale=0.01)).keys(70_000)
    b = SyntheticCriteo(SyntheticConfig(seed=3, scale=0.01)).keys(1000)
    c = SyntheticCriteo(SyntheticConfig(seed=4, scale=0.01)).keys(1000)
    np.testing.assert_array_equal(a[:1000], b)
    assert not np.array_equal(b, c)
    later = SyntheticCriteo(SyntheticConfig(seed=3, scale=0.01)).keys(100, start=65_500)
    np.testing.assert_array_equal(later, a[65_500:65_600])


def test_keys_are_int64_in_their_field_and_within_cardinality() -> None:
    gen = SyntheticCriteo(SyntheticConfig(scale=0.01))
    keys = gen.keys(20_000)
    assert keys.dtype == np.int64
    np.testing.assert_array_equal(keys >> 32, np.broadcast_to(np.arange(26), keys.shape))
    for f, card in enumerate(gen.cards):
        assert len(np.unique(keys[:, f])) <= card


def test_popularity_follows_the_power_law() -> None:
    gen = SyntheticCriteo(SyntheticConfig(scale=0.05, alpha=1.05))
    keys = gen.keys(65_536)[:, 2]  # field C3, 506,562 values at this scale
    _, counts = np.unique(keys, return_counts=True)
    top = np.sort(counts)[::-1]
    weights = np.arange(1, gen.cards[2] + 1, dtype=np.float64) ** -1.05
    expected_top = 65_536 * weights[:3] / weights.sum()
    np.testing.assert_allclose(top[:3], expected_top, rtol=0.15)


def test_locality_trace_reuses_keys_nearby_and_drifts_away_over_time() -> None:
    def reuse(locality: bool) -> tuple[float, float]:
        gen = SyntheticCriteo(SyntheticConfig(scale=0.05, locality=locality))
        keys = gen.keys(34_816)[:, gen.session_fields]
        window = keys[32_768:].ravel().tolist()
        near, far = set(keys[30_720:32_768].ravel().tolist()), set(keys[:2048].ravel().tolist())
        return np.mean([k in near for k in window]), np.mean([k in far for k in window])

    (near_local, far_local), (near_iid, far_iid) = reuse(True), reuse(False)
    assert near_local > near_iid + 0.1  # sessions: keys come back in the next batches
    assert far_local < far_iid - 0.1  # drift: popularity moves on


def test_labels_are_learnable_from_keys() -> None:
    batch = SyntheticCriteo(SyntheticConfig(scale=0.002, seed=1)).batch(60_000)
    train, test = slice(0, 50_000), slice(50_000, 60_000)
    assert 0.1 < batch.labels.mean() < 0.45
    # Per-key log-odds from the training part, summed: a naive-Bayes-like scorer.
    score = np.zeros(10_000)
    base = batch.labels[train].mean()
    for f in range(26):
        k_train, y = batch.keys[train, f], batch.labels[train].astype(np.float64)
        uniq, inv = np.unique(k_train, return_inverse=True)
        pos = np.bincount(inv, weights=y, minlength=len(uniq))
        cnt = np.bincount(inv, minlength=len(uniq))
        logit = np.log((pos + 10 * base) / (cnt - pos + 10 * (1 - base)))
        idx = np.searchsorted(uniq, batch.keys[test, f]).clip(0, len(uniq) - 1)
        known = uniq[idx] == batch.keys[test, f]
        score += np.where(known, logit[idx], 0.0)
    y = batch.labels[test]
    order = np.argsort(score)
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    auc = (ranks[y == 1].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (len(y) - y.sum()))
    assert auc > 0.65


def test_tsv_written_reads_back_as_the_in_memory_trace(tmp_path) -> None:
    cfg = SyntheticConfig(scale=0.01, seed=2, missing_rate=0.1)
    path = tmp_path / "s.tsv"
    assert main(["--out", str(path), "--samples", "300", "--scale", "0.01", "--seed", "2",
                 "--missing-rate", "0.1"]) == 0
    expected = SyntheticCriteo(cfg).batch(300)
    reader = CriteoReader(str(path))
    got = next(iter(reader))
    assert reader.skipped == 0
    np.testing.assert_array_equal(got.keys, expected.keys)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_allclose(got.dense, expected.dense)


def _interrupted_after_one_chunk(gen: SyntheticCriteo):
    first = next(gen.batches(100))

    def batches(num_samples: int):
        yield first
        raise KeyboardInterrupt  # as Ctrl-C during `make demo`

    return batches


def test_an_interrupted_write_tsv_leaves_no_file_under_the_target_name(tmp_path,
                                                                       monkeypatch) -> None:
    gen = SyntheticCriteo(SyntheticConfig(scale=0.001))
    monkeypatch.setattr(gen, "batches", _interrupted_after_one_chunk(gen))
    with pytest.raises(KeyboardInterrupt):
        gen.write_tsv(tmp_path / "demo_criteo.tsv", 200)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_tsv_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "demo_criteo.tsv"
    gen = SyntheticCriteo(SyntheticConfig(scale=0.001))
    gen.write_tsv(path, 50)
    before = path.read_bytes()
    monkeypatch.setattr(gen, "batches", _interrupted_after_one_chunk(gen))
    with pytest.raises(KeyboardInterrupt):
        gen.write_tsv(path, 200)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
