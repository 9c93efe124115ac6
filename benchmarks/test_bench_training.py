"""Whole-model benchmarks: one training step, one inference pass, one epoch; ours in fp32 and (where the
device has bfloat16 arithmetic) bf16 autocast against the authors' way (``authors_way.py``).

Presets run at full size (iemocap: B=10 dialogues of up to 110 utterances, 35.7M parameters; meld: B=10
of up to 24); ``ADA2I_BENCH_SMOKE=1`` shrinks everything for CI. The step and inference groups use the
same padded batch for both ways (drawn without bucketing, as the authors' loader does); our encoders
skip its padded rows. The epoch group compares our default trainer configuration (packed encoders,
factored ring, length-bucketed batches, sync-free step) with the authors' way (padded grid, literal
ring, random batches, their unfused step), on the synthetic corpus.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from ada2i_fast import Ada2I, Ada2IConfig, TrainConfig
from ada2i_fast.data import iterate_batches, make_synthetic, padding_waste
from ada2i_fast.devices import resolve_precision
from ada2i_fast.training.step import make_optimizer, train_step
from authors_way import authors_eval_forward, authors_model, authors_optimizer, authors_train_step
from roofline import inference_cost, record, tensor_bytes, train_step_cost

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMOKE = os.environ.get("ADA2I_BENCH_SMOKE") == "1"
DATASETS = ("iemocap", "meld")
OURS = ("ours fp32", "ours bf16")
needs_bf16 = pytest.mark.skipif(
    resolve_precision("auto", DEVICE) != "bf16", reason="this device has no native bfloat16 arithmetic"
)
WAYS = [OURS[0], pytest.param(OURS[1], marks=needs_bf16), "authors"]


def _precision(way: str) -> str:
    return way.split()[-1] if way in OURS else "fp32"


def _compute_dtype(way: str) -> torch.dtype:
    return torch.bfloat16 if _precision(way) == "bf16" else torch.float32


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


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_train_step(benchmark, dataset, way):
    torch.manual_seed(0)
    config = _config(dataset)
    ours = way in OURS
    model = (Ada2I(config) if ours else authors_model(config)).to(DEVICE)
    batch = _first_batch(dataset, config)
    recipe = TrainConfig.preset(dataset, precision=_precision(way))
    if ours:
        optimizer = make_optimizer(model, recipe)
        generator = torch.Generator(device=DEVICE).manual_seed(0)

        def step():
            train_step(model, batch, optimizer, recipe, modulate=True, generator=generator)
            _sync()

    else:
        optimizer = authors_optimizer(model, recipe)

        def step():
            authors_train_step(model, batch, optimizer, recipe, modulate=True)

    cost = train_step_cost(  # runs one step: the warm-up (optimizer state, allocator)
        step,
        model.parameters(),
        modulated=itertools.chain(*model.encoder_parameters()),
        noise=recipe.grad_noise,
        extra_bytes=tensor_bytes(batch.features.values()),
    )
    benchmark.group = f"train step {dataset} (B=10, T={batch.max_len}, {batch.num_utterances} utterances)"
    benchmark.pedantic(step, rounds=3 if SMOKE else 5, iterations=1)
    _record(benchmark, batch.num_utterances)
    record(benchmark, cost, _compute_dtype(way))


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_inference(benchmark, dataset, way):
    """``Ada2I.predict`` (packed encoders, factored ring, inference mode) against the authors' eval forward
    (padded grid, literal ring, no_grad)."""
    torch.manual_seed(0)
    config = _config(dataset)
    ours = way in OURS
    model = (Ada2I(config) if ours else authors_model(config)).to(DEVICE)
    batch = _first_batch(dataset, config)

    def predict():
        if ours:
            model.predict(batch, _precision(way))
        else:
            authors_eval_forward(model, batch)
        _sync()

    cost = inference_cost(predict, model.parameters(), extra_bytes=tensor_bytes(batch.features.values()))
    benchmark.group = f"inference {dataset} (B=10, T={batch.max_len}, {batch.num_utterances} utterances)"
    benchmark.pedantic(predict, rounds=3 if SMOKE else 10, iterations=1, warmup_rounds=1)
    _record(benchmark, batch.num_utterances)
    record(benchmark, cost, _compute_dtype(way))


@pytest.mark.parametrize("way", WAYS)
def test_epoch(benchmark, way):
    """Ours: packed encoders, factored ring, length-bucketed batches, sync-free step; the authors':
    literal ring, padded grid, random batches, their step."""
    ours = way in OURS
    torch.manual_seed(0)
    config = _config("iemocap")
    split = _corpus("iemocap").splits["train"]
    model = (Ada2I(config) if ours else authors_model(config)).to(DEVICE)
    recipe = TrainConfig.preset("iemocap", precision=_precision(way))
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


@pytest.mark.parametrize("dataset", DATASETS)
def test_synthetic_corpus_generation(benchmark, dataset):
    """Building a full-size synthetic corpus (what every run without --data does first)."""
    corpus = benchmark.pedantic(make_synthetic, args=(dataset,), kwargs=dict(seed=1, size=0.05 if SMOKE else 1.0),
                                rounds=1 if SMOKE else 3, iterations=1)
    assert corpus.splits["train"].num_utterances > 0
