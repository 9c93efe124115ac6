import copy

import pytest
import torch

from ada2i_fast import Ada2I, Ada2IConfig, Batch
from conftest import random_batch, tiny_config


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "dataset, total, encoders, afw, head",
    [
        ("iemocap", 35_670_850, 34_824_580, 840_864, 5_406),
        ("meld", 18_564_043, 18_245_292, 314_544, 4_207),
    ],
)
def test_parameter_counts_equal_the_public_model(dataset, total, encoders, afw, head):
    model = Ada2I(Ada2IConfig.preset(dataset))
    assert (_count(model), _count(model.encoders), _count(model.afw), _count(model.head)) == (
        total,
        encoders,
        afw,
        head,
    )


def _dialogue(batch: Batch, index: int) -> Batch:
    n = int(batch.lengths[index])
    features = {m: x[index : index + 1, :n] for m, x in batch.features.items()}
    return Batch.build(features, [n], batch.labels[index : index + 1, :n])


def _alone_and_together(config):
    torch.manual_seed(0)
    model = Ada2I(config).eval()
    batch = random_batch(config, [3, 9, 6])
    with torch.no_grad():
        return model(_dialogue(batch, 0)).log_probs, model(batch).log_probs[:3]


@pytest.mark.parametrize("encoder", ["transformer", "lstm"])
def test_outputs_do_not_depend_on_batch_mates_in_method_mode(encoder):
    alone, together = _alone_and_together(tiny_config(encoder=encoder))
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_reference_mode_reproduces_the_public_codes_dependence_on_batch_mates():
    # Padding reaches the encoders' self-attention and the AFW mean (SPEC §5).
    alone, together = _alone_and_together(tiny_config(compat="reference"))
    assert (together - alone).abs().max() > 1e-2


def test_forward_output_shapes_and_loss():
    torch.manual_seed(0)
    config = tiny_config(lambda_modal=0.5)
    model = Ada2I(config)
    batch = random_batch(config, [4, 1, 2])
    out = model(batch)
    assert out.log_probs.shape == (7, 5) and out.unimodal_logits.shape == (3, 7, 5)
    assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(7))
    assert out.scores.shape == (3,)
    terms = model.loss_terms(out)
    assert set(terms) == {"classification", "feature", "modal"}
    assert torch.allclose(model.loss(out), sum(terms.values()))
    assert torch.equal(out.labels, torch.cat([batch.labels[0, :4], batch.labels[1, :1], batch.labels[2, :2]]))


def test_concat_head_when_mmcosine_is_off():
    torch.manual_seed(0)
    config = tiny_config(mmcosine=False)
    model = Ada2I(config)
    out = model(random_batch(config, [3, 2]))
    # The concat head's logits are exactly the sum of the unimodal ones.
    assert torch.allclose(out.log_probs, torch.log_softmax(out.unimodal_logits.sum(0), -1), atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_predict_is_the_eval_forward_and_restores_the_mode(training):
    torch.manual_seed(1)
    config = tiny_config(modalities="tv")
    model = Ada2I(config).train(training)
    batch = random_batch(config, [2, 5])
    prediction = model.predict(batch)
    assert model.training == training
    expected = copy.deepcopy(model).eval()(batch).log_probs.exp()  # no dropout: the eval-mode forward
    torch.testing.assert_close(prediction.probabilities, expected, rtol=1e-6, atol=0)
    assert prediction.labels.tolist() == expected.argmax(-1).tolist()
    assert prediction.lengths.tolist() == [2, 5]


def test_bad_inputs_name_the_problem():
    config = tiny_config()
    model = Ada2I(config)
    good = random_batch(config, [2, 3])
    wrong_dim = dict(good.features, a=torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match="modality 'a': expected feature dim 12, found 7"):
        model(Batch.build(wrong_dim, [2, 3], good.labels))
    with pytest.raises(ValueError, match="lacks modality 'v'"):
        model(Batch.build({m: good.features[m] for m in "at"}, [2, 3], good.labels))
    with pytest.raises(ValueError, match=r"labels out of range: expected 0..4, found 0..9"):
        model(Batch.build(good.features, [2, 3], torch.full((2, 3), 9).index_fill_(1, torch.tensor([0]), 0)))
    with pytest.raises(ValueError, match="empty batch"):
        Batch.build({m: x[:0] for m, x in good.features.items()}, [])
    with pytest.raises(ValueError, match="empty dialogue at batch position"):
        Batch.build(good.features, [2, 0])
    with pytest.raises(ValueError, match="padded to T=3"):
        Batch.build(good.features, [2, 4])


def test_batch_build_casts_or_refuses_dtypes_and_rejects_non_integral_labels_and_lengths():
    config = tiny_config()
    good = random_batch(config, [2, 3])
    as_double = Batch.build({m: x.double() for m, x in good.features.items()}, [2, 3], good.labels)
    assert all(x.dtype == torch.float32 for x in as_double.features.values())
    assert torch.equal(as_double.features["a"], good.features["a"])
    whole_floats = Batch.build(good.features, torch.tensor([2.0, 3.0]), good.labels.double())
    assert whole_floats.lengths.tolist() == [2, 3] and whole_floats.labels.dtype == torch.long
    cases = [
        (dict(features={**good.features, "t": good.features["t"].long()}), r"features\['t'\] must be floating point"),
        (dict(labels=good.labels.double() + 0.5), r"labels must be whole numbers, found \d\.5"),
        (dict(labels=torch.where(good.labels > -1, float("nan"), 0.0)), "labels must be whole numbers, found nan"),
        (dict(labels=good.labels.bool()), "labels must be integers, got dtype torch.bool"),
        (dict(lengths=[2.5, 3]), "lengths must be whole numbers, found 2.5"),
    ]
    for change, message in cases:
        arguments = {"features": good.features, "lengths": [2, 3], "labels": good.labels, **change}
        with pytest.raises(ValueError, match=message):
            Batch.build(**arguments)


def test_whatever_a_padded_row_holds_never_reaches_a_real_output():
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config).eval()
    batch = random_batch(config, [4, 2])
    garbage = {m: x.clone() for m, x in batch.features.items()}
    for x in garbage.values():
        x[1, 2:] = float("nan")
    labels = batch.labels.double()
    labels[1, 2:] = float("nan")  # padded labels are ignored too
    with torch.no_grad():
        clean, dirty = model(batch), model(Batch.build(garbage, [4, 2], labels))
    torch.testing.assert_close(dirty.log_probs, clean.log_probs, rtol=0, atol=0)
    assert torch.isfinite(dirty.feature_loss)


@pytest.mark.parametrize("compat", ["method", "reference"])
def test_a_model_restricted_to_some_modalities_drops_the_others(compat):
    torch.manual_seed(3)
    batch = random_batch(tiny_config(), [6, 3, 4])
    without_afw = Ada2I(tiny_config(mmt_nlayers=0, compat=compat)).eval()
    full = without_afw.predict(batch)
    for kept in ("at", "v", "tv"):
        part = without_afw.restricted_to(kept)
        assert part.config.modalities == kept and set(part.encoders) == set(kept)
        # Without AFW nothing mixes the modalities: the fused logits are the kept modalities' shares plus the bias.
        index = [without_afw.config.modalities.index(m) for m in kept]
        logits = full.contributions[:, index].sum(1) + full.bias
        torch.testing.assert_close(part.predict(batch).probabilities, logits.softmax(-1), rtol=1e-5, atol=1e-6)

    model = Ada2I(tiny_config(compat=compat)).eval()
    same = model.restricted_to("atv")
    torch.testing.assert_close(same.predict(batch).probabilities, model.predict(batch).probabilities, rtol=0, atol=0)
    text = model.restricted_to("t")
    single = Ada2I(tiny_config(modalities="t", compat=compat)).eval()
    single.load_state_dict(text.state_dict())
    torch.testing.assert_close(text.predict(batch).probabilities, single.predict(batch).probabilities, rtol=0, atol=0)
    assert not torch.equal(text.predict(batch).probabilities, model.predict(batch).probabilities)
    with torch.no_grad():
        text.afw.layers[0].rank_weight.zero_()
    assert model.afw.layers[0].rank_weight.abs().sum() > 0  # no shared storage
    for bad in ("tx", "tt", ""):
        with pytest.raises(ValueError, match="expected distinct letters among the model's 'atv'"):
            model.restricted_to(bad)


def _reordered(model, order):
    """``model`` with its modalities in ``order``: the stacked AFW weights and the head's column blocks permuted."""
    config = model.config.replace(modalities=order)
    index = torch.tensor([model.config.modalities.index(m) for m in order])
    classes, hidden = config.num_classes, config.hidden
    state = {}
    for name, value in model.state_dict().items():
        if name.startswith("afw."):
            value = value.index_select(0, index)
        elif name == "head.fc_out.weight":
            value = value.reshape(classes, len(order), hidden).index_select(1, index).reshape(classes, -1)
        state[name] = value
    reordered = Ada2I(config)
    reordered.load_state_dict(state)
    return reordered.eval()


def test_the_modality_order_is_the_afw_chain_order_as_the_modalities_help_says():
    """Two modalities: ta is at with its weights permuted (the same function); three: avt is another model."""
    torch.manual_seed(0)
    two = Ada2I(tiny_config(modalities="at", beta=0.0)).eval()
    batch = random_batch(two.config, [5, 3])
    torch.testing.assert_close(_reordered(two, "ta").predict(batch).probabilities, two.predict(batch).probabilities)
    three = Ada2I(tiny_config(modalities="atv", beta=0.0)).eval()
    for layer in three.afw.layers:  # a large attention term, so that the chain products decide the output
        layer.rank_weight.data.mul_(3.0)
    batch = random_batch(three.config, [5, 3])
    difference = _reordered(three, "avt").predict(batch).probabilities - three.predict(batch).probabilities
    assert difference.abs().max() > 1e-3
