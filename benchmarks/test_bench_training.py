"""Whole-model benchmarks: one training step (ours vs the authors' way), one inference pass, one epoch.

Presets run at full size (iemocap: B=10 dialogues of up to 110 utterances, 35.7M parameters; meld: B=10
of up to 24); ``ADA2I_BENCH_SMOKE=1`` shrinks everything for CI. The epoch group compares our default
trainer configuration (factored ops, length-bucketed batches, sync-free step) with the authors'
way (literal ring, random batches, their unfused step), on the synthetic corpus.
"""

from __future__ import annotations

import os

import pytest
import torch

from ada2i_fast import Ada2I, Ada2IConfig, TrainConfig, use_backend
from ada2i_fast.data import iterate_batches, make_synthetic, padding_waste
from ada2i_fast.step import make_optimizer, train_step
from authors_way import authors_model, authors_optimizer, authors_train_step

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMOKE = os.environ.get("ADA2I_BENCH_SMOKE") == "1"
DATASETS = ("iemocap", "meld")


def _config(dataset: str) -> Ada2IConfig:
    if SMOKE:
        return Ada2IConfig.preset(dataset, hidden=16, rank=3, ffn_dim=16, encoder_nlayers=1)
    return Ada2IConfig.preset(dataset)


def _corpus(dataset: str):
    return make_synthetic(dataset, seed=0, size=0.03 if SMOKE else 0.25)


def _first_batch(dataset: str, config: Ada2IConfig):
    """A batch of B=10 dialogues drawn without bucketing, as the authors' loader does."""
    split = _corpus(dataset).splits["train"]
    batch_size = TrainConfig.preset(dataset).batch_size
    return next(iterate_batches(split, config.modalities, batch_size, shuffle=True, seed=0)).to(DEVICE)


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _record(benchmark, utterances: int) -> None:
    benchmark.extra_info["device"] = str(DEVICE)
    if not benchmark.enabled:
        return
    benchmark.extra_info["utterances_per_s"] = utterances / benchmark.stats.stats.mean
    if DEVICE.type == "cuda":
        benchmark.extra_info["peak_bytes"] = torch.cuda.max_memory_allocated()


@pytest.mark.parametrize("way", ["ours", "authors"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_train_step(benchmark, dataset, way):
    torch.manual_seed(0)
    config = _config(dataset)
    model = (Ada2I(config) if way == "ours" else authors_model(config)).to(DEVICE)
    batch = _first_batch(dataset, config)
    recipe = TrainConfig.preset(dataset)
    if way == "ours":
        optimizer = make_optimizer(model, recipe)
        generator = torch.Generator(device=DEVICE).manual_seed(0)

        def step():
            train_step(model, batch, optimizer, recipe, modulate=True, generator=generator)
            _sync()

    else:
        optimizer = authors_optimizer(model, recipe)

        def step():
            authors_train_step(model, batch, optimizer, recipe, modulate=True)

    step()  # warm-up: optimizer state, allocator
    benchmark.group = f"train step {dataset} (B=10, T={batch.max_len}, {batch.num_utterances} utterances)"
    benchmark.pedantic(step, rounds=3 if SMOKE else 5, iterations=1)
    _record(benchmark, batch.num_utterances)


@pytest.mark.parametrize("backend", ["torch", "literal"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_inference(benchmark, dataset, backend):
    torch.manual_seed(0)
    config = _config(dataset)
    model = Ada2I(config).to(DEVICE)
    batch = _first_batch(dataset, config)

    def predict():
        with use_backend(backend):
            model.predict(batch)
        _sync()

    benchmark.group = f"inference {dataset} (B=10, T={batch.max_len})"
    benchmark.pedantic(predict, rounds=3 if SMOKE else 10, iterations=1, warmup_rounds=1)
    _record(benchmark, batch.num_utterances)


@pytest.mark.parametrize("way", ["ours (factored, bucketed)", "authors (literal, unbucketed)"])
def test_epoch(benchmark, way):
    ours = way.startswith("ours")
    torch.manual_seed(0)
    config = _config("iemocap")
    split = _corpus("iemocap").splits["train"]
    model = (Ada2I(config) if ours else authors_model(config)).to(DEVICE)
    recipe = TrainConfig.preset("iemocap")
    optimizer = make_optimizer(model, recipe) if ours else authors_optimizer(model, recipe)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    order = dict(shuffle=True, seed=0, bucket=ours)

    def epoch():
        for batch in iterate_batches(split, config.modalities, recipe.batch_size, **order):
            batch = batch.to(DEVICE)
            if ours:
                train_step(model, batch, optimizer, recipe, modulate=True, generator=generator)
            else:
                authors_train_step(model, batch, optimizer, recipe, modulate=True)
        _sync()

    benchmark.group = f"train epoch synthetic iemocap ({split.num_dialogues} dialogues)"
    benchmark.pedantic(epoch, rounds=1 if SMOKE else 2, iterations=1)
    benchmark.extra_info["padding_waste"] = padding_waste(split, recipe.batch_size, **order)
    _record(benchmark, split.num_utterances)
