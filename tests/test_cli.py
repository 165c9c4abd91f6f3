"""`templates.cli`: the recipes' shared flags and the library objects they become."""

import argparse
import dataclasses

import pytest

from templates.cli import (
    add_hardware_arguments,
    add_plan_arguments,
    add_run_arguments,
    settings_flags,
    settings_from,
    add_settings_arguments,
    label_count,
    setup_hardware,
    transfer_plan,
    write_metrics,
)
from templates.data.settings import flag_fields
from templates.models.text_classifiers import TextClassifierSettings
from templates.training.plan import TransferPlan
from templates.training.run import FIT_ONLY
from templates.training.word_vector_sources import WordVectorSettings


def parse(*flags, **plan_defaults):
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, "runs/x")
    add_plan_arguments(parser, TransferPlan(**plan_defaults))
    add_hardware_arguments(parser)
    return parser.parse_args(flags)


def test_the_flags_build_the_plan_they_describe():
    plan = transfer_plan(parse())  # the image and text recipes' early-stopping defaults
    assert plan.early_stopping() == {"keep_best": True, "patience": 3, "restore_best": True,
                                     "monitor": "val_accuracy"}
    assert plan == TransferPlan()  # every default is the plan's own
    fixed = transfer_plan(parse(patience=0, restore_best=False))  # the digits comparison's
    assert fixed.early_stopping()["keep_best"] is False and fixed.patience == 0
    stop_only = transfer_plan(parse("--no-restore-best", "--patience", "2"))
    assert stop_only.early_stopping() == {"keep_best": True, "patience": 2,
                                          "restore_best": False, "monitor": "val_accuracy"}
    chosen = transfer_plan(parse(
        "--head-epochs", "7", "--fine-tune-epochs", "2", "--learning-rate", "0.01",
        "--fine-tune-learning-rate", "1e-5", "--batch-size", "16", "--seed", "4",
        "--schedule", "one_cycle", "--find-learning-rates", "--monitor", "val_loss",
        "--discriminative-factor", "2.5", "--tensorboard", "logs"), steps_per_epoch=9)
    assert (chosen.head_epochs, chosen.fine_tune_epochs, chosen.learning_rate,
            chosen.fine_tune_learning_rate, chosen.batch_size, chosen.seed) == (
        7, 2, 0.01, 1e-5, 16, 4)
    assert (chosen.schedule, chosen.find_learning_rates, chosen.monitor,
            chosen.discriminative_factor, chosen.steps_per_epoch) == (
        "one_cycle", True, "val_loss", 2.5, 9)
    # --tensorboard DIR: one TensorBoard callback per phase, in DIR/PHASE.
    assert {phase: [callback.log_dir for callback in callbacks]
            for phase, callbacks in chosen.callbacks.items()} == {
        "head": ["logs/head"], "fine_tune": ["logs/fine_tune"]}
    # A recipe's own defaults, given as a plan.
    text = transfer_plan(parse(fine_tune_epochs=6, fine_tune_learning_rate=5e-4))
    assert (text.fine_tune_epochs, text.fine_tune_learning_rate) == (6, 5e-4)
    # --class-weight balanced: weights from the training labels (3 of class 0, 1 of 1).
    balanced = transfer_plan(parse("--class-weight", "balanced"), [0, 0, 0, 1])
    assert balanced.class_weight == pytest.approx({0: 4 / 6, 1: 2.0})
    assert transfer_plan(parse(), [0, 0, 0, 1]).class_weight is None
    # Without the labels yet, the plan keeps "balanced" until it meets the training set
    # (which also gives the steps per epoch); run_transfer refuses it unresolved.
    later = transfer_plan(parse("--class-weight", "balanced", "--batch-size", "3"))
    assert later.class_weight == "balanced" and later.steps_per_epoch is None
    fitted = later.for_training_set([0, 0, 0, 1])
    assert fitted.class_weight == pytest.approx({0: 4 / 6, 1: 2.0})
    assert fitted.steps_per_epoch == 2
    import keras

    from templates.training.run import check_plan_fits

    with pytest.raises(ValueError, match="needs the training labels"):
        check_plan_fits(later, keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]))
    # Bad values are refused at the door, naming the flag (issue 37).
    with pytest.raises(SystemExit):
        transfer_plan(parse("--patience", "-1"))


def test_the_finder_flag_takes_a_recipe_default_and_can_be_turned_off():
    assert transfer_plan(parse()).find_learning_rates is False
    assert transfer_plan(parse("--find-learning-rates")).find_learning_rates is True
    assert transfer_plan(parse(find_learning_rates=True)).find_learning_rates is True
    assert transfer_plan(parse("--no-find-learning-rates",
                               find_learning_rates=True)).find_learning_rates is False


def test_the_multi_worker_check_names_every_refused_flag():
    """One list (`templates.training.run.FIT_ONLY`) refuses the flags before any work
    and the plan's fields inside run_transfer."""
    arguments = parse("--strategy", "multi_worker", "--compare-scratch", "--export-tflite",
                      "--label-smoothing", "0.1")
    with pytest.raises(ValueError) as raised:
        setup_hardware(arguments, multi_worker=True)
    for flag in ("--compare-scratch", "--export-tflite", "--label-smoothing"):
        assert flag in str(raised.value)
    assert {"--compare-scratch", "--export-tflite", "--augment"} <= set(FIT_ONLY)
    assert {"augmentation", "label_smoothing", "class_weight"} <= set(FIT_ONLY.values())


def test_the_accuracy_gate_fails_below_the_bar(capsys, tmp_path):
    arguments = parse("--assert-accuracy-at-least", "0.9")
    arguments.output_dir = str(tmp_path)
    assert write_metrics(arguments, {"test_accuracy": 0.95, "val_accuracy": 0.5}) == 0
    assert write_metrics(arguments, {"test_accuracy": 0.85}) == 1
    assert "FAILED: test_accuracy 0.8500 is below the required 0.9" in capsys.readouterr().err
    # Without a test set the gate reads the validation accuracy.
    assert write_metrics(arguments, {"val_accuracy": 0.89}) == 1
    unbarred = parse()
    unbarred.output_dir = str(tmp_path)
    assert write_metrics(unbarred, {"val_accuracy": 0.1}) == 0  # no bar: never fails


def test_the_plan_from_the_flags_seeds_keras_before_any_model_is_built():
    """Recipes build their models after `transfer_plan`: the plan's seed decides the new
    head's initial weights, so a killed and resumed run rebuilds the same model."""
    import argparse

    import keras
    import numpy as np

    from templates.cli import add_plan_arguments, add_run_arguments, transfer_plan

    def first_draw(seed):
        parser = argparse.ArgumentParser()
        add_run_arguments(parser, "runs/x")
        add_plan_arguments(parser)
        transfer_plan(parser.parse_args(["--seed", str(seed)]))
        layer = keras.layers.Dense(3)
        layer.build((None, 4))  # initialised from Keras's global generator
        return keras.ops.convert_to_numpy(layer.kernel)

    np.testing.assert_array_equal(first_draw(7), first_draw(7))
    assert not np.array_equal(first_draw(7), first_draw(8))


def test_cache_memory_gb_sets_the_features_limit_and_refuses_a_negative_one():
    from recipes.cats_vs_dogs import parse_arguments

    def plan_with(*flags):
        args = parse_arguments(list(flags))
        return transfer_plan(args, feature_memory_gb=args.cache_memory_gb)

    assert plan_with().feature_memory_gb == 4.0  # the flag's default, not the library's 2
    assert plan_with("--cache-memory-gb", "0.2").feature_memory_gb == 0.2
    assert transfer_plan(parse()).feature_memory_gb == 2.0  # recipes without the flag
    for bad in ("-1", "inf", "nan"):
        with pytest.raises(SystemExit):
            plan_with("--cache-memory-gb", bad)


def test_every_plan_setting_has_one_flag_spelled_as_the_field_with_its_default():
    """Issue 38: a setting has one name and one default, the plan's."""
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, "runs/x")
    add_plan_arguments(parser)
    flags = {}
    for action in parser._actions:
        for option in action.option_strings:
            flags.setdefault(action.dest, []).append(option)
    defaults = TransferPlan()
    assert len(flag_fields(TransferPlan)) >= 15
    for field in flag_fields(TransferPlan):
        name = "--" + field.name.replace("_", "-")
        assert name in flags[field.name], (field.name, flags.get(field.name))
        assert [option for option in flags[field.name] if not option.startswith("--no-")] == [
            name], flags[field.name]
        assert parser.get_default(field.name) == getattr(defaults, field.name), field.name
    # No other flag sets a plan field under another name.
    plan_names = {field.name for field in flag_fields(TransferPlan)}
    others = [option for dest, options in flags.items() if dest not in plan_names
              for option in options]
    assert not {"--epochs", "--find-lr"} & set(others)


@pytest.mark.parametrize("plan", [
    TransferPlan(),
    TransferPlan(head_epochs=7, fine_tune_epochs=0, learning_rate=0.02,
                 fine_tune_learning_rate=3e-5, batch_size=12, schedule="one_cycle",
                 discriminative_factor=2.6, find_learning_rates=True, finder_rule="valley",
                 patience=0, restore_best=False, monitor="val_macro_f1", seed=41,
                 class_weight="balanced", label_smoothing=0.1, keep_fine_tuning="always"),
])
def test_a_plan_round_trips_through_its_flags(plan):
    assert transfer_plan(parse(*settings_flags(plan))) == plan


@pytest.mark.parametrize("settings", [
    WordVectorSettings(),
    WordVectorSettings(vectors="vectors.txt", vector_source="glove+word2vec",
                       in_domain_vectors="off", develop_vectors="corpus.txt",
                       develop_evaluation="analogy", allow_unskilled=True, extra_vocabulary=0,
                       normalize_vectors=False, sequence_length=40, words_with_spaces=True,
                       trust_pickle=True),
    TextClassifierSettings(),
    TextClassifierSettings(architecture="bigru", filters=8, multichannel=True, units=5,
                           embedding_dropout=0.1, embedding_training="missing_only",
                           anchor_strength=0.5),
])
def test_other_settings_make_one_flag_per_field_and_round_trip(settings):
    """The GloVe recipe's word-vector and classifier settings are dataclasses too: one
    flag per field, spelled as the field, with the field's default."""
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, type(settings)(), "settings")
    for field in flag_fields(type(settings)):
        assert parser.get_default(field.name) == getattr(type(settings)(), field.name)
    assert len(flag_fields(type(settings))) == len(dataclasses.fields(settings))
    args = parser.parse_args(settings_flags(settings))
    assert settings_from(args, type(settings)) == settings


def test_label_counts_are_whole_numbers_from_one_or_all():
    assert label_count("16") == 16 and label_count("all") is None
    for text in ("0", "2.5", "every"):
        with pytest.raises(argparse.ArgumentTypeError):
            label_count(text)
