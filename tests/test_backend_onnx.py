"""The exported-model backends (``search.backends``: ONNX Runtime, OpenVINO): parity with torch on every
vector of the test corpus,
the export cache (reused, redone when the checkpoint changes), the fallback to torch with one line when
an export fails, and the message when the ``[onnx]`` extra is missing.

Skipped without ``onnxruntime`` (the OpenVINO cases without ``openvino``) outside CI; under ``CI=true``
(``.ci/run`` installs ``.[test]``, which pulls ``.[onnx,openvino]``) they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search.backends import EXTRA_HINT, cache_root

if os.environ.get("CI") != "true":
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

from search.backends import onnx as ort_backend  # noqa: E402
from search.encoder import Encoder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["a", "a photo of a cat", "a red bicycle in the snow", "Ünïcödé 写真", "two dogs " * 60]


def corpus_images() -> list[Image.Image]:
    """Every decodable picture under data/ (the README's sample collection)."""
    images = []
    for path in sorted((ROOT / "data").rglob("*")):
        try:
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        except (OSError, ValueError):
            continue
    assert len(images) >= 5
    return images


def both(model: Path, cache: Path, backend: str = "onnx") -> tuple[Encoder, Encoder]:
    torch_enc = Encoder.load(str(model), "cpu")
    onnx_enc = Encoder.load(str(model), "cpu", backend=backend, cache=cache)
    return torch_enc, onnx_enc


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_model import build_tiny_siglip

    return build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.mark.parametrize(("family", "backend"), [("clip", "onnx"), ("siglip", "onnx"), ("clip", "openvino"), ("siglip", "openvino")])
def test_parity_on_every_vector_of_the_corpus(family: str, backend: str, tiny_clip: Path, tiny_siglip: Path, tmp_path: Path) -> None:
    if backend == "openvino" and os.environ.get("CI") != "true":
        pytest.importorskip("openvino")
    model = tiny_clip if family == "clip" else tiny_siglip
    torch_enc, onnx_enc = both(model, tmp_path / "onnx", backend)
    assert (torch_enc.backend, onnx_enc.backend) == ("torch", backend)
    images = corpus_images()
    for batch in (images, images[:1], images[1:4]):  # the batch axis is dynamic
        got = cosines(torch_enc.encode_images(batch), onnx_enc.encode_images(batch))
        assert got.min() >= ort_backend.PARITY_MIN, got
    for texts in (TEXTS, TEXTS[1:2], TEXTS[3:]):  # so is the sequence axis (padding, truncation)
        got = cosines(torch_enc.encode_text(texts), onnx_enc.encode_text(texts))
        assert got.min() >= ort_backend.PARITY_MIN, got
    (record,) = (tmp_path / "onnx").glob("*/parity-*.json")
    stored = json.loads(record.read_text())
    assert stored["passed"] is True and stored["min_cosine_image"] >= ort_backend.PARITY_MIN
    assert stored["machine"] == ort_backend.machine_id(backend)


def test_the_export_is_reused_and_redone_when_the_checkpoint_changes(tiny_clip: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = Path(shutil.copytree(tiny_clip, tmp_path / "model"))
    cache = tmp_path / "onnx"
    Encoder.load(str(model), "cpu", backend="onnx", cache=cache)
    assert "exporting the model to ONNX" in capfd.readouterr().err
    (first,) = [p for p in cache.iterdir() if p.is_dir()]
    stamp = (first / "vision.onnx").stat().st_mtime_ns

    again = Encoder.load(str(model), "cpu", backend="onnx", cache=cache)
    assert again.backend == "onnx"
    assert capfd.readouterr().err == ""  # no export, no parity run: nothing to say
    assert (first / "vision.onnx").stat().st_mtime_ns == stamp
    assert [p for p in cache.iterdir()] == [first]  # no leftover temporary folder

    config = model / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))  # the checkpoint changed
    changed = Encoder.load(str(model), "cpu", backend="onnx", cache=cache)
    assert changed.backend == "onnx"
    assert "exporting the model to ONNX" in capfd.readouterr().err
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_a_failed_export_falls_back_to_torch_with_one_line(tiny_clip: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(encoder: Encoder, folder: Path) -> None:
        (folder / "vision.onnx").write_bytes(b"half")  # what a crash half-way leaves
        raise RuntimeError("Exporting the operator 'aten::made_up' to ONNX opset version 17 is not supported.\nmore")

    monkeypatch.setattr(ort_backend, "export", fail)
    cache = tmp_path / "onnx"
    encoder = Encoder.load(str(tiny_clip), "cpu", backend="onnx", cache=cache)
    assert encoder.backend == "torch" and encoder.runtime is None
    lines = [line for line in capfd.readouterr().err.splitlines() if "exporting the model" not in line]
    assert len(lines) == 1 and "running the model with torch" in lines[0] and "aten::made_up" in lines[0], lines
    assert [p.name for p in cache.iterdir()] == [f"{ort_backend.checkpoint_key(tiny_clip)}.failed"]  # nothing half-written

    # Remembered: the next process does not try again, and says why in one line; vectors are torch's.
    monkeypatch.undo()
    again = Encoder.load(str(tiny_clip), "cpu", backend="auto", cache=cache)
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and "failed before" in lines[0], lines
    reference = Encoder.load(str(tiny_clip), "cpu")
    np.testing.assert_array_equal(again.encode_text(TEXTS), reference.encode_text(TEXTS))


def test_cli_backends_give_the_same_results(cli, collection: Path) -> None:  # type: ignore[no-untyped-def]
    report = cli("index", str(collection), "--backend", "onnx", "--json")
    assert report["indexed"] > 5
    assert list((cli.home / "onnx").glob("*/vision.onnx")) and cache_root(cli.home) == cli.home / "onnx"
    runs = {b: cli("search", "a cat", "--backend", b, "--no-server", "-k", "5", "--json") for b in ("torch", "onnx", "auto")}
    paths = {b: [hit["path"] for hit in hits] for b, hits in runs.items()}
    assert paths["torch"] == paths["onnx"] == paths["auto"]
    for a, b in zip(runs["torch"], runs["onnx"], strict=True):
        assert abs(a["score"] - b["score"]) < 1e-3
    image = next(collection.rglob("chelsea*"))
    assert cli("similar", str(image), "--backend", "onnx", "--no-server", "-k", "3", "--json")[0]["path"] == str(image)


def test_missing_extra_is_one_sentence_and_auto_stays_quiet(cli, collection: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cli("index", str(collection), "--backend", "torch", "--json")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extras were not installed
    monkeypatch.setitem(sys.modules, "openvino", None)
    result = cli("search", "a cat", "--backend", "onnx", "--no-server", expect=1)
    assert result.stderr.strip() == f"Error: {EXTRA_HINT}"
    quiet = cli("search", "a cat", "--backend", "auto", "--no-server")
    assert quiet.stdout.strip() and not quiet.stderr  # torch, silently
    assert not (cli.home / "onnx").exists()


def test_a_one_query_process_runs_auto_on_torch() -> None:
    from search.backends import for_one_query

    assert [for_one_query(b) for b in ("auto", "torch", "onnx", "openvino")] == ["torch", "torch", "onnx", "openvino"]
    assert for_one_query("auto", "int8") == "auto"  # int8 runs on ONNX Runtime: kept as asked


def test_unknown_backend_is_refused(cli, collection: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("index", str(collection), "--backend", "tensorrt", expect=1)
    assert "Unknown backend 'tensorrt'" in result.stderr


def test_auto_takes_the_fastest_runtime_that_passed_parity(tiny_clip: Path, tmp_path: Path) -> None:
    """What auto picks follows the stored records (the timings in them are the machine's, not asserted)."""
    from search.backends import RUNTIMES, installed

    cache = tmp_path / "onnx"
    records = {}
    for name in (n for n in RUNTIMES if installed(n)):
        assert Encoder.load(str(tiny_clip), "cpu", backend=name, cache=cache).backend == name
        (path,) = cache.glob(f"*/parity-{name}-*.json")
        records[name] = json.loads(path.read_text())
    faster = {n: r["runtime_ms"] for n, r in records.items() if r["passed"] and r["runtime_ms"] < r["torch_ms"]}
    expected = min(faster, key=faster.__getitem__) if faster else "torch"
    assert Encoder.load(str(tiny_clip), "cpu", backend="auto", cache=cache).backend == expected


def test_int8_keeps_a_cosine_of_0_99_on_every_vector(tiny_clip: Path, tmp_path: Path) -> None:
    torch_enc = Encoder.load(str(tiny_clip), "cpu")
    int8 = Encoder.load(str(tiny_clip), "cpu", backend="onnx", cache=tmp_path / "onnx", precision="int8")
    assert int8.backend == "onnx" and int8.runtime.files["vision"].name == "vision.int8.onnx"
    images = corpus_images()
    assert cosines(torch_enc.encode_images(images), int8.encode_images(images)).min() >= ort_backend.INT8_MIN
    assert cosines(torch_enc.encode_text(TEXTS), int8.encode_text(TEXTS)).min() >= ort_backend.INT8_MIN
    (record,) = (tmp_path / "onnx").glob("*/parity-onnx-int8-*.json")
    assert json.loads(record.read_text())["passed"] is True


def test_int8_through_the_cli_and_refused_on_torch(cli, collection: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("index", str(collection), "--backend", "torch", "--precision", "int8", expect=1)
    assert "--precision int8 runs on ONNX Runtime" in result.stderr
    assert cli("index", str(collection), "--backend", "onnx", "--precision", "int8", "--json")["indexed"] > 5
    hits = cli("search", "a cat", "--backend", "onnx", "--precision", "int8", "--no-server", "-k", "3", "--json")
    assert len(hits) == 3
