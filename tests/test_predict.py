"""experiments.predict: pictures and arrays classified as the model classifies the arrays; bad files
are one sentence each and the rest are still classified."""

import json

import numpy as np
import pytest
from PIL import Image

from experiments import cli
from experiments import predict as predict_script
from fmnist_jax.data import datasets
from fmnist_jax.runs import restore
from fmnist_jax.runs.files import RunPaths
from fmnist_jax.serving import predict


def _model_classes(results_dir, images):
    restored = restore.restore_run(RunPaths("mlp2", results_dir.parent, results_dir.parent.parent / "checkpoints"))
    return predict.make_classifier(restored)(images).argmax(-1)


def _save_png(path, image):
    Image.fromarray(np.asarray(image, np.uint8), mode="L").save(path)


def _run(flags, files, capsys, *extra):
    out = cli.invoke(predict_script, ["--run=mlp2", *extra, *flags[1:], *map(str, files)])
    return out, capsys.readouterr()


def test_test_images_as_png_npy_and_idx_get_the_models_classes(mlp_ensemble, tmp_path, capsys):
    flags, ds, results = mlp_ensemble
    images = ds.x_test[:6].copy()           # made test-like: a light object on a dark border
    images[:, :3], images[:, -3:], images[:, :, :3], images[:, :, -3:] = 0, 0, 0, 0
    expected = _model_classes(results, images)
    pngs = [tmp_path / f"test{i}.png" for i in range(len(images))]
    for path, image in zip(pngs, images):
        _save_png(path, image)
        assert (predict.read_file(path)[0].image == image).all()      # read back exactly
    np.save(tmp_path / "batch.npy", images)
    datasets.write_idx(tmp_path / "batch-idx3-ubyte.gz", images)
    out, printed = _run(flags, [*pngs, tmp_path / "batch.npy", tmp_path / "batch-idx3-ubyte.gz"], capsys)
    preds = out["predictions"]
    assert len(preds) == 3 * len(images) and not out["errors"]
    got = [datasets.CLASS_NAMES["fashion_mnist"].index(p["top"][0]["label"]) for p in preds]
    assert got == list(expected) * 3
    assert all(len(p["top"]) == 3 and p["top"][0]["probability"] >= p["top"][1]["probability"] for p in preds)
    lines = printed.out.strip().splitlines()
    assert len(lines) == 18 and lines[0].startswith(f"{pngs[0]}: ") and "batch.npy[5]" in printed.out


def test_real_test_images_saved_as_png_keep_the_models_class(mlp_ensemble, real_data, tmp_path, capsys):
    flags, _, results = mlp_ensemble
    images = real_data.x_test[:10]
    pngs = [tmp_path / f"real{i}.png" for i in range(10)]
    for path, image in zip(pngs, images):
        _save_png(path, image)
    out, _ = _run(flags, pngs, capsys, "--json")
    assert [p["top"][0]["class"] for p in out["predictions"]] == list(_model_classes(results, images))
    assert all(p["preprocessing"] == ["none (already 28x28, grey, light on dark)"] for p in out["predictions"])


def test_a_colour_photo_dark_on_light_is_brought_to_the_convention(tmp_path):
    small = np.zeros((28, 28))
    small[4:24, 9:19] = 1.0                                          # a light 10x20 object on dark
    big = np.kron(1.0 - small, np.ones((8, 8)))                       # dark on light, 224x224
    canvas = np.ones((300, 260, 3))
    canvas[40:264, 20:244] = big[..., None] * np.array([1.0, 0.9, 0.8])   # a tinted photo with a margin
    Image.fromarray((canvas * 255).astype(np.uint8)).save(tmp_path / "photo.jpg", quality=95)
    (item,) = predict.read_file(tmp_path / "photo.jpg")
    steps = " ".join(item.steps)
    assert "colour -> grey" in steps and "inverted" in steps and "cropped" in steps
    assert item.image.shape == (28, 28) and item.image.dtype == np.uint8
    assert item.image[:, :5].max() < 40 and item.image[:, -5:].max() < 40      # dark margins
    assert item.image[2:26, 10:18].min() > 200                                   # the object, scaled to 28 rows


def test_bad_files_are_one_sentence_each_and_the_rest_are_classified(mlp_ensemble, tmp_path, capsys):
    flags, ds, _ = mlp_ensemble
    _save_png(tmp_path / "good.png", ds.x_test[0])
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "broken.png").write_bytes((tmp_path / "good.png").read_bytes()[:60])
    np.save(tmp_path / "wrong.npy", np.zeros((3, 32, 32)))
    bad = ["notes.txt", "empty.png", "broken.png", "wrong.npy", "missing.jpg"]
    with pytest.raises(SystemExit) as exit_info:
        _run(flags, [tmp_path / "good.png", *(tmp_path / b for b in bad)], capsys, "--json")
    assert exit_info.value.code == 1
    printed = capsys.readouterr()
    doc = json.loads(printed.out)
    assert [p["file"] for p in doc["predictions"]] == [str(tmp_path / "good.png")]
    errors = printed.err.strip().splitlines()
    assert len(errors) == len(bad) == len(doc["errors"])
    for line, name in zip(errors, bad):
        assert line.startswith(f"error: {tmp_path / name}: ") and line.endswith("."), line
        assert line.count(". ") == 0, line                                       # one sentence
    assert "empty" in errors[1] and "not a PNG, JPEG, .npy or IDX file" in errors[0]
