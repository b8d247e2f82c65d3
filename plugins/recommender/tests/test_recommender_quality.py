"""The shipped weights, evaluated fresh on the held-out test split, beat the baselines."""

from __future__ import annotations

import pytest
import torch
from streamproc_recommender.artifacts import load_artifacts
from streamproc_recommender.data import generate_music, load_movielens
from streamproc_recommender.evaluate import evaluate_baselines, evaluate_model

METRICS = ("hr@10", "ndcg@10")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.quality
def test_shipped_model_beats_popularity_item_knn_and_markov_on_movielens_test_users() -> None:
    artifacts = load_artifacts()
    catalog = load_movielens()
    model = evaluate_model(artifacts.model, artifacts.vocab, catalog, "test")
    baselines = evaluate_baselines(artifacts.vocab, catalog, "test")
    for name, metrics in baselines.items():
        for metric in METRICS:
            assert model[metric] > metrics[metric], (name, metric, model, metrics)
    # Target: about 1.3x the Markov chain's hit rate (shipped: 0.193 vs 0.146, 1.32x);
    # asserted with a small margin so a retrain on another CPU does not flake.
    assert model["hr@10"] >= 1.25 * baselines["markov"]["hr@10"], (model, baselines["markov"])


@pytest.mark.quality
def test_shipped_model_beats_the_baselines_on_the_synthetic_music_test_users() -> None:
    artifacts = load_artifacts()
    catalog = generate_music()
    model = evaluate_model(artifacts.model, artifacts.vocab, catalog, "test")
    baselines = evaluate_baselines(artifacts.vocab, catalog, "test")
    for name, metrics in baselines.items():
        for metric in METRICS:
            assert model[metric] > metrics[metric], (name, metric, model, metrics)
