import pytest

from ada2i_fast import Ada2IConfig, TrainConfig


def test_presets_hold_the_published_settings():
    iemocap, iemocap_recipe = Ada2IConfig.preset("iemocap"), TrainConfig.preset("iemocap")
    assert (iemocap.hidden, iemocap.beta, iemocap.rank) == (300, 0.012, 11)
    assert (iemocap_recipe.lr, iemocap_recipe.alpha, iemocap_recipe.start_mod) == (1.7e-4, 0.037, 4)
    assert iemocap.input_dims == {"a": 512, "t": 768, "v": 1024} and iemocap.num_classes == 6
    meld, meld_recipe = Ada2IConfig.preset("meld"), TrainConfig.preset("meld")
    assert (meld.hidden, meld.beta, meld.rank) == (200, 0.55, 6)
    assert (meld_recipe.lr, meld_recipe.alpha, meld_recipe.start_mod) == (1.3e-4, 0.42, 4)
    assert meld.input_dims == {"a": 300, "t": 768, "v": 342} and meld.num_classes == 7
    mosei = Ada2IConfig.preset("mosei", modalities="ta")
    assert (mosei.hidden, mosei.rank, mosei.modalities, TrainConfig.preset("mosei").start_mod) == (200, 8, "ta", 1)
    for config in (iemocap, meld, mosei):
        assert config.mmcosine and config.compat == "method"
        assert (config.drop_rate, config.encoder_nlayers, config.mmt_nlayers) == (0.5, 2, 2)
    for recipe in (TrainConfig.preset(d) for d in ("iemocap", "meld", "mosei")):
        assert recipe.modulation and recipe.grad_noise
        assert (recipe.seed, recipe.batch_size, recipe.epochs, recipe.patience, recipe.max_grad_norm) == (12, 10, 50, 20, 2.0)


def test_the_model_config_holds_no_training_policy():
    assert not set(Ada2IConfig.field_names()) & set(TrainConfig.field_names())
    assert {"alpha", "lr", "epochs", "seed"} <= set(TrainConfig.field_names())


@pytest.mark.parametrize(
    "semantics_of, expected",
    [
        (dict(compat="method"), dict(mask_padding=True, mean_over_padding=False, feature_target="attention",
                                     feature_rows="real", head_normalisation="class", cosine_scale=10.0)),
        (dict(compat="reference"), dict(mask_padding=False, mean_over_padding=True, feature_target="output",
                                        feature_rows="all", head_normalisation="feature", cosine_scale=1.0)),
        (dict(compat="method", mmcosine=False), dict(head_normalisation="none")),
        (dict(compat="reference", amw_scale=4.0), dict(cosine_scale=4.0)),
    ],
)
def test_compat_resolves_once_into_named_semantics(semantics_of, expected):
    semantics = Ada2IConfig(**semantics_of).semantics
    assert {name: getattr(semantics, name) for name in expected} == expected


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
        (dict(num_classes=1), "num_classes"),
    ],
)
def test_invalid_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        Ada2IConfig(**overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(start_mod=9, end_mod=3), "start_mod"),
        (dict(lr=0.0), "lr"),
        (dict(alpha=-1.0), "alpha"),
        (dict(batch_size=0), "batch_size"),
        (dict(precision="fp8"), "precision"),
    ],
)
def test_invalid_recipes_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_unknown_dataset_and_fields():
    with pytest.raises(ValueError, match="unknown dataset 'cmu'"):
        Ada2IConfig.preset("cmu")
    with pytest.raises(ValueError, match="learning_rate"):
        Ada2IConfig.from_dict({"learning_rate": 1.0})


def test_dict_round_trip():
    config = Ada2IConfig.preset("meld", compat="reference")
    assert Ada2IConfig.from_dict(config.to_dict()) == config


def test_cosine_scale_defaults_to_ten_for_the_method_and_one_for_the_public_code():
    from ada2i_fast.modules.model import Ada2I
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


@pytest.mark.parametrize("beta, layers, refused", [(1e6, 2, False), (-1.01, 1000, False), (1e6, 3, True),
                                                   (1e6, 1000, True), (1.5, 1000, True)])
def test_a_beta_that_compounds_past_float32_over_the_afw_layers_is_refused(beta, layers, refused):
    if not refused:
        Ada2IConfig(beta=beta, mmt_nlayers=layers)
        return
    with pytest.raises(ValueError, match=rf"beta {beta} over {layers} AFW layers scales the features by "
                                         rf"\|beta\|\^{layers} > 1e\+12"):
        Ada2IConfig(beta=beta, mmt_nlayers=layers)


@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("alpha", float("nan")), ("weight_decay", float("inf")),
                                          ("modulation", "no"), ("max_grad_norm", "2")])
def test_a_recipe_refuses_non_finite_or_mistyped_values(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be (a finite number in|true or false)"):
        TrainConfig(**{field: value})
