"""predict() and `sdsearch predict` on PNGs of real digits, with the model `sdsearch train` wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdsearch.cli import main
from sdsearch.core.config import BackboneConfig, BranchesConfig, ModelConfig, TrainConfig, TrialConfig
from sdsearch.data.datasets import Dataset, load_dataset
from sdsearch.deploy.build import train
from sdsearch.deploy.predict import PredictError, predict
from sdsearch.graphs.runtime import onnx_session

SMALL = TrialConfig(
    model=ModelConfig(
        backbone=BackboneConfig(width=0.25, depth=1), branches=BranchesConfig(placement=(1, 3))
    ),
    train=TrainConfig(epochs=10, batch_size=64),
    deploy_exit="1",
)
N_IMAGES = 40


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as patch:  # predict reads the ONNX files: no .tflite (seconds)
        patch.setattr("sdsearch.core.platforms.missing_mcu_packages", lambda: ["tflite_micro"])
        with pytest.warns(UserWarning, match=r"model\.int8\.tflite: not written"):
            return train(SMALL, out=tmp_path_factory.mktemp("runs") / "small", progress=False).out


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset(SMALL.data, seed=SMALL.seed)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory, data: Dataset) -> Path:
    """The first test images as 8x8 grayscale PNGs, named so that sorting keeps their order."""
    folder = tmp_path_factory.mktemp("digits")
    for i, image in enumerate(data.x_test[:N_IMAGES]):
        Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    return folder


def test_a_folder_of_pngs_gives_the_classes_of_the_images(run: Path, pngs: Path, data: Dataset) -> None:
    predictions = predict(run, [pngs])
    assert [Path(p.image).name for p in predictions] == [f"{i:03d}.png" for i in range(N_IMAGES)]
    # Exactly what the model says on the original arrays: PNG, PIL and the table add nothing.
    logits = onnx_session(run / "model.onnx").run(
        None, {"pixels": np.ascontiguousarray(data.x_test[:N_IMAGES].transpose(0, 2, 3, 1))}
    )[0]
    assert [p.indices[0] for p in predictions] == list(logits.argmax(1))
    # And a trained model reads real digits: the class names are the digits themselves.
    right = sum(p.classes[0] == str(y) for p, y in zip(predictions, data.y_test[:N_IMAGES]))
    assert right >= 0.8 * N_IMAGES, right


def test_top_k_int8_and_colour_images(run: Path, pngs: Path, tmp_path: Path) -> None:
    files = sorted(pngs.iterdir())[:10]
    top3 = predict(run, files, top=3)
    for p in top3:
        assert len(p.classes) == 3 and list(p.confidences) == sorted(p.confidences, reverse=True)
        assert 0 < sum(p.confidences) <= 1 + 1e-9
    int8 = predict(run, files, int8=True)
    assert sum(a.classes[0] == b.classes[0] for a, b in zip(top3, int8)) >= 8
    # An RGB copy (R = G = B) converts back to exactly the grayscale image.
    rgb = tmp_path / "rgb.png"
    Image.open(files[0]).convert("RGB").save(rgb)
    (gray,), (colour,) = predict(run, [files[0]]), predict(run, [rgb])
    assert colour.classes == gray.classes and colour.confidences == pytest.approx(gray.confidences)
    # Other sizes are resized to the model's 8x8.
    big = tmp_path / "big.png"
    Image.open(files[0]).resize((32, 32)).save(big)
    assert predict(run, [big])[0].classes[0] in [str(i) for i in range(10)]


def test_cli_prints_a_table_or_json(run: Path, pngs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = sorted(pngs.iterdir())[:2]
    assert main(["predict", str(run), *map(str, first), "--top", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in rows] == [str(p) for p in first] and len(rows[0]["top"]) == 2
    assert set(rows[0]["top"][0]) == {"class", "index", "confidence"}
    assert main(["predict", str(run), str(first[0]), "--int8"]) == 0
    out = capsys.readouterr().out
    assert "image" in out and "confidence" in out and str(first[0]) in out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no such run folder"),
        (lambda d: (d / "file").write_text("x") and d / "file", "is a file, not a run folder"),
        (lambda d: d, "model.onnx: missing; train a model into this folder with: sdsearch train"),
        (lambda d: (d / "model.onnx").write_bytes(b"not onnx") and d, "not a readable ONNX model"),
    ],
    ids=["missing", "file", "no-model", "corrupt-model"],
)
def test_a_bad_run_folder_is_one_line_and_exit_2(tmp_path, pngs, capsys, make, message) -> None:
    run_dir = make(tmp_path)
    assert main(["predict", str(run_dir), str(pngs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(run_dir) in err and "Traceback" not in err


def test_a_bad_image_names_it(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "broken.png").write_text("not a picture")
    assert main(["predict", str(run), str(tmp_path / "broken.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png: cannot read this image" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictError, match="no images in this folder"):
        predict(run, [tmp_path / "empty"])
    with pytest.raises(PredictError, match="no such file or folder"):
        predict(run, [tmp_path / "nope.png"])
    assert main(["predict", str(run), str(tmp_path), "--top", "0"]) == 2
    assert capsys.readouterr().err.startswith("--top:")


def test_a_rewritable_run_says_how_to_rewrite_it(run: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text((run / "config.yaml").read_text())
    (tmp_path / "model.onnx").write_bytes((run / "model.onnx").read_bytes()[:100])  # truncated
    with pytest.raises(
        PredictError, match=r"write it again with: sdsearch train .*config\.yaml --out"
    ) as info:
        predict(tmp_path, [run / "config.yaml"])
    assert info.value.exit_code == 2 and info.value.path == tmp_path / "model.onnx"
