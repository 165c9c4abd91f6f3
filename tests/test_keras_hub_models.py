"""`templates.models.keras_hub_presets`: keras-hub image presets behind the same template.

keras-hub presets cannot be downloaded here: the tests write tiny presets with random
weights to a temporary folder (``Backbone.save_to_preset`` and
``ImageConverter.save_to_preset``) and load them as a user loads a downloaded one.
"""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from templates.models.backbones import WeightsUnavailableError, block_cut_points
from templates.models.pretrained import pretrained_model
from templates.training.plan import TransferPlan
from templates.training.run import run_transfer


def tiny_resnet_preset(folder, image_size=32):
    """A two-stage keras-hub ResNet with its image converter, random weights."""
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(None, None, 3))
    converter = keras_hub.layers.ResNetImageConverter(image_size=(image_size, image_size),
                                                      scale=1 / 255.0)
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder


def bright_dark(count=32, size=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 2).astype("int32")
    images = rng.uniform(0, 120, (count, size, size, 3)) + labels[:, None, None, None] * 120
    return tf.data.Dataset.from_tensor_slices((images.astype("float32"), labels)).batch(8)


def test_a_preset_folder_becomes_a_transfer_model_with_frozen_batch_norm(tmp_path):
    from templates.training.saving import load_model, save_model

    preset = tiny_resnet_preset(tmp_path / "preset")
    transfer = pretrained_model(f"keras_hub:{preset}", num_classes=2, image_size=40,
                                class_names=["dark", "bright"])
    # The converter resizes to the requested side and scales 0..255 inside the model.
    assert transfer.model.input_shape == (None, 40, 40, 3)
    assert type(transfer.preprocessing).__name__ == "ResNetImageConverter"
    assert transfer.fine_tune_from == "stack1_block0_1_pad"  # the last stage
    assert block_cut_points(transfer.backbone, 2) == ["stack0_block0_out", "stack1_block0_out"]
    norms = [layer for layer in transfer.backbone.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    before = [keras.ops.convert_to_numpy(layer.moving_mean).copy() for layer in norms]
    run = run_transfer(transfer, bright_dark(), bright_dark(seed=1),
                       TransferPlan(head_epochs=2, fine_tune_epochs=2, learning_rate=1e-2,
                                    fine_tune_learning_rate=1e-3, patience=0,
                                    restore_best=False))
    assert run.phases["fine_tune"].epochs == 2
    # Fine-tuning changed the last stage's convolutions, never BatchNorm's statistics.
    for layer, mean in zip(norms, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.moving_mean), mean)
    # The .keras round trip in safe mode (keras-hub's layers are registered on demand).
    save_model(transfer.model, tmp_path / "model.keras")
    images = next(iter(bright_dark()))[0][:4]
    np.testing.assert_allclose(load_model(tmp_path / "model.keras").predict(images, verbose=0),
                               transfer.model.predict(images, verbose=0), atol=1e-5)
    # Cut at a stage: only that much is reused.
    cut = pretrained_model(f"keras_hub:{preset}", 2, image_size=40, cut_at="stack0_block0_out")
    assert cut.feature_extractor.output_shape == (None, 10, 10, 64)
    assert cut.fine_tune_from is None  # one stage left: fine-tune all of it
    with pytest.raises(ValueError, match="alpha=0.5"):
        pretrained_model(f"keras_hub:{preset}", 2, alpha=0.5)
    with pytest.raises(ValueError, match="does not exist"):
        pretrained_model(f"keras_hub:{tmp_path / 'missing'}", 2)


def test_an_unreachable_preset_name_fails_with_one_sentence(monkeypatch):
    import keras_hub

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(WeightsUnavailableError, match="local preset folder"):
        pretrained_model("keras_hub:resnet_18_imagenet", num_classes=2)


@pytest.mark.acceptance  # the whole recipe on a keras-hub preset, with --resume
def test_the_image_recipe_runs_on_a_local_preset(subprocess_env, tmp_path):
    from test_multi_worker import colour_photos

    preset = tiny_resnet_preset(tmp_path / "preset")
    colour_photos(tmp_path / "photos", per_class=16)
    out = tmp_path / "run"
    arguments = [sys.executable, "-m", "recipes.cats_vs_dogs", "--data-dir",
                 str(tmp_path / "photos" / "train"), "--test-dir", str(tmp_path / "photos" / "test"),
                 "--backbone", f"keras_hub:{preset}", "--image-size", "64",
                 "--head-epochs", "1",
                 "--fine-tune-epochs", "1", "--batch-size", "8", "--compare-scratch",
                 "--reuse-sweep", "2", "--output-dir", str(out)]
    cwd = subprocess_env["PYTHONPATH"].split(":")[0]
    result = subprocess.run(arguments, env=subprocess_env, capture_output=True, text=True,
                            timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["backbone"] == f"keras_hub:{preset}"
    for name in ("model.keras", "labels.txt", "evaluation/evaluation.json",
                 "evaluation/grad_cam.png", "transfer_report.json", "reuse_sweep.json"):
        assert (out / name).is_file(), name
    # The reuse-depth sweep cut the keras-hub backbone at its two stage ends.
    sweep = json.loads((out / "reuse_sweep.json").read_text())
    assert [row["cut_at"] for row in sweep["depths"]] == ["stack0_block0_out",
                                                           "stack1_block0_out"]
    photo = next((tmp_path / "photos" / "test" / "red").glob("*.png"))
    predicted = subprocess.run([sys.executable, "-m", "recipes.predict", str(out), str(photo)],
                               env=subprocess_env, capture_output=True, text=True,
                               timeout=300, cwd=cwd)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].split()[0] in ("red", "blue"), predicted.stdout
    # --resume over the finished run restores both phases and ends with the same score.
    resumed = subprocess.run(arguments + ["--resume"], env=subprocess_env, capture_output=True,
                             text=True, timeout=600, cwd=cwd)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    again = json.loads((out / "metrics.json").read_text())
    assert again["test_accuracy"] == metrics["test_accuracy"]
