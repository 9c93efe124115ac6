import pytest

from ada2i_fast import Ada2IConfig


def test_presets_hold_the_published_settings():
    iemocap = Ada2IConfig.preset("iemocap")
    assert (iemocap.hidden, iemocap.lr, iemocap.alpha, iemocap.beta, iemocap.rank) == (300, 1.7e-4, 0.037, 0.012, 11)
    assert iemocap.input_dims == {"a": 512, "t": 768, "v": 1024} and iemocap.num_classes == 6
    meld = Ada2IConfig.preset("meld")
    assert (meld.hidden, meld.lr, meld.alpha, meld.beta, meld.rank, meld.start_mod) == (200, 1.3e-4, 0.42, 0.55, 6, 4)
    assert meld.input_dims == {"a": 300, "t": 768, "v": 342} and meld.num_classes == 7
    mosei = Ada2IConfig.preset("mosei", modalities="ta")
    assert (mosei.hidden, mosei.rank, mosei.start_mod, mosei.modalities) == (200, 8, 1, "ta")
    for config in (iemocap, meld, mosei):
        assert config.mmcosine and config.modulation and config.grad_noise and config.compat == "method"
        assert (config.drop_rate, config.encoder_nlayers, config.mmt_nlayers, config.seed) == (0.5, 2, 2, 12)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(modalities="atx"), "modalities"),
        (dict(modalities="aa"), "repeat"),
        (dict(modalities=""), "modalities"),
        (dict(rank=0), "rank"),
        (dict(hidden=0), "hidden"),
        (dict(compat="paper"), "compat"),
        (dict(encoder="gru"), "encoder"),
        (dict(drop_rate=1.0), "drop_rate"),
        (dict(input_dims={"a": 3, "t": -1, "v": 3}), "input_dims\\['t'\\]"),
        (dict(start_mod=9, end_mod=3), "start_mod"),
        (dict(num_classes=1), "num_classes"),
    ],
)
def test_invalid_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        Ada2IConfig(**overrides)


def test_unknown_dataset_and_fields():
    with pytest.raises(ValueError, match="unknown dataset 'cmu'"):
        Ada2IConfig.preset("cmu")
    with pytest.raises(ValueError, match="learning_rate"):
        Ada2IConfig.from_dict({"learning_rate": 1.0})


def test_dict_round_trip():
    config = Ada2IConfig.preset("meld", compat="reference")
    assert Ada2IConfig.from_dict(config.to_dict()) == config


def test_cosine_scale_defaults_to_ten_for_the_method_and_one_for_the_public_code():
    from ada2i_fast.model import Ada2I
    from conftest import tiny_config

    assert Ada2IConfig().amw_scale is None and Ada2IConfig().cosine_scale == 10.0
    assert Ada2IConfig(compat="reference").cosine_scale == 1.0  # the public code has no scale
    assert Ada2IConfig(amw_scale=3.0).cosine_scale == 3.0
    assert Ada2I(tiny_config()).head.scale == 10.0
    # A config saved before s had a default keeps the value it stored.
    old = Ada2IConfig.from_dict({**Ada2IConfig().to_dict(), "amw_scale": 1.0})
    assert old.cosine_scale == 1.0
    with pytest.raises(ValueError, match="amw_scale"):
        Ada2IConfig(amw_scale=0.0)
