"""Shared test set-up: the real data in ../shared, and Keras's weights cache.

Tests that need ../shared (real photos, Keras's official MobileNet weights) skip when
it is absent on a developer's machine, but FAIL when TRANSFER_COOKBOOK_REQUIRE_SHARED=1,
which .ci/run sets: in CI a missing data folder must never turn into a green run.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("TRANSFER_COOKBOOK_SHARED", REPOSITORY.parent / "shared"))
SHARED_KERAS_MODELS = SHARED / "keras_home" / "models"
CATS_VS_DOGS = SHARED / "data" / "cats_vs_dogs"
GLOVE = SHARED / "data" / "glove"
SST2 = SHARED / "data" / "text" / "sst2"
PRESETS = SHARED / "presets"
REQUIRE_SHARED = os.environ.get("TRANSFER_COOKBOOK_REQUIRE_SHARED") == "1"

# Keras reads KERAS_HOME once, at import, and writes keras.json there. Point it at a
# private folder whose models/ links to the shared weights, so the shared folder is
# never written to and Keras finds the weights through its normal cache.
KERAS_HOME = pathlib.Path(tempfile.mkdtemp(prefix="transfer-cookbook-keras-home-"))
if SHARED_KERAS_MODELS.is_dir():
    (KERAS_HOME / "models").symlink_to(SHARED_KERAS_MODELS, target_is_directory=True)
os.environ["KERAS_HOME"] = str(KERAS_HOME)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# JAX keeps the programs it compiles (the training and prediction steps) in a folder of
# this session, so the JAX runs after the first start without compiling them again.
os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="transfer-cookbook-jax-")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# Word-vector caches go to a private folder too, never to the user's ~/.cache.
os.environ["TRANSFER_COOKBOOK_CACHE"] = tempfile.mkdtemp(prefix="transfer-cookbook-cache-")
# This process's folders above (each xdist worker makes its own), removed when its
# session ends (tmp_path's folders are pytest's, which keeps the last three runs).
SESSION_FOLDERS = (KERAS_HOME, os.environ["JAX_COMPILATION_CACHE_DIR"],
                   os.environ["TRANSFER_COOKBOOK_CACHE"])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove this process's folders (KERAS_HOME's models/ is a link: only the link
    goes, never the shared weights)."""
    for folder in SESSION_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tier first: pytest-xdist hands tests out roughly in this order, so the
    long recipe runs start early and the short tests fill the gaps at the end."""
    items.sort(key=lambda item: item.get_closest_marker("acceptance") is None)


def require_shared(*paths: pathlib.Path) -> None:
    """Skip (developer machine) or fail (CI) when shared data is missing."""
    missing = [str(path) for path in paths if not path.exists()]
    if not missing:
        return
    message = (
        f"shared test data missing: {', '.join(missing)} (see ../shared/README.md; "
        "set TRANSFER_COOKBOOK_SHARED to its location)"
    )
    if REQUIRE_SHARED:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def cats_vs_dogs_dir() -> pathlib.Path:
    require_shared(CATS_VS_DOGS / "train", CATS_VS_DOGS / "test",
                   SHARED_KERAS_MODELS / "mobilenet_2_5_224_tf_no_top.h5")
    return CATS_VS_DOGS


def linked_photos(cats_vs_dogs_dir: pathlib.Path, root: pathlib.Path, train: int,
                  test: int) -> pathlib.Path:
    """``root/{train,test}/{cats,dogs}``: the first ``train`` and ``test`` shared photos
    of each class, linked (not copied). Returns ``root``."""
    for split, count in (("train", train), ("test", test)):
        for label in ("cats", "dogs"):
            folder = root / split / label
            folder.mkdir(parents=True)
            source = cats_vs_dogs_dir / split / label
            for name in sorted(os.listdir(source))[:count]:
                os.symlink(source / name, folder / name)
    return root


@pytest.fixture
def shared_dir() -> pathlib.Path:
    require_shared(GLOVE / "glove.6B.50d.10k.txt", GLOVE / "glove.6B.50d.10k.zip")
    return SHARED


@pytest.fixture
def sst2_dir() -> pathlib.Path:
    require_shared(*(SST2 / f"stsa.binary.{split}" for split in ("train", "dev", "test")))
    return SST2


@pytest.fixture
def minilm_dir() -> pathlib.Path:
    """all-MiniLM-L6-v2's Hugging Face folder (real weights; keras-hub converts it)."""
    folder = PRESETS / "all-MiniLM-L6-v2"
    require_shared(folder / "model.safetensors", folder / "tokenizer.json")
    return folder


@pytest.fixture
def lite0_dir() -> pathlib.Path:
    """EfficientNet-Lite0's timm folder (real ImageNet weights)."""
    folder = PRESETS / "efficientnet_lite0"
    require_shared(folder / "model.safetensors", folder / "config.json")
    return folder


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running recipes in a subprocess, offline and on the shared cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    return env


def kill_when(arguments, env, ready, timeout=600, **options):
    """Start ``arguments``, SIGKILL it as soon as ``ready()`` is true, and wait.

    Fails if the process ends on its own first (it could not be interrupted).
    """
    import signal
    import subprocess
    import time

    process = subprocess.Popen(arguments, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, **options)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None and not ready():
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


WITHOUT_TENSORFLOW = str(REPOSITORY / "tests" / "without_tensorflow.py")


class RecipeRuns:
    """Whole recipe runs that several tests read, each run once per session.

    The TensorFlow runs behind the published means (the cats defaults, GloVe on 1,000
    SST-2 sentences, seeds 1-3) are also what the JAX runs are compared with
    (tests/test_backends.py): the same command is trained once, whichever test asks first.
    ``backend="jax"`` runs the recipe with TensorFlow hidden (`without_tensorflow.py`).
    """

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.done: dict[tuple, tuple[pathlib.Path, dict]] = {}

    def run(self, module: str, arguments: list[str], backend: str = "tensorflow",
            timeout: int = 1800) -> tuple[pathlib.Path, dict]:
        """``(output folder, metrics.json)`` of ``python -m module arguments``."""
        import json
        import subprocess
        import sys

        key = (module, tuple(arguments), backend)
        if key not in self.done:
            out = self.folder / f"run{len(self.done)}_{module.split('.')[-1]}_{backend}"
            env = dict(os.environ, KERAS_BACKEND=backend)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY),
                                                              env.get("PYTHONPATH")]))
            runner = [WITHOUT_TENSORFLOW] if backend != "tensorflow" else []
            result = subprocess.run([sys.executable, *runner, "-m", module, *arguments,
                                     "--output-dir", str(out)], env=env, capture_output=True,
                                    text=True, timeout=timeout, cwd=REPOSITORY)
            assert result.returncode == 0, (key, result.stdout[-3000:] + result.stderr[-3000:])
            self.done[key] = out, json.loads((out / "metrics.json").read_text())
        return self.done[key]

    def cats(self, seed: int, *extra: str, backend: str = "tensorflow"):
        """The cats recipe on the shared photos (MobileNet 0.25, ImageNet weights, the
        finder, and ``extra``): one seed."""
        require_shared(CATS_VS_DOGS / "train", CATS_VS_DOGS / "test",
                       SHARED_KERAS_MODELS / "mobilenet_2_5_224_tf_no_top.h5")
        return self.run("recipes.cats_vs_dogs", [
            "--data-dir", str(CATS_VS_DOGS / "train"), "--test-dir", str(CATS_VS_DOGS / "test"),
            "--backbone", "MobileNet", "--alpha", "0.25", "--seed", str(seed), *extra], backend)

    def cats_defaults(self, seed: int, backend: str = "tensorflow"):
        """The cats recipe's defaults, test-time flips on: one seed."""
        return self.cats(seed, "--test-time-flips", backend=backend)

    def sst2(self, seed: int, *extra: str, backend: str = "tensorflow"):
        """The GloVe recipe on SST-2 with --compare-scratch (and ``extra``): one seed."""
        require_shared(*(SST2 / f"stsa.binary.{split}" for split in ("train", "dev", "test")))
        return self.run("recipes.glove_text_classification", [
            "--train", str(SST2 / "stsa.binary.train"),
            "--validation", str(SST2 / "stsa.binary.dev"),
            "--test", str(SST2 / "stsa.binary.test"), "--compare-scratch", "--seed",
            str(seed), *extra], backend)


@pytest.fixture(scope="session")
def recipe_runs(tmp_path_factory) -> RecipeRuns:
    return RecipeRuns(tmp_path_factory.mktemp("recipe_runs"))
