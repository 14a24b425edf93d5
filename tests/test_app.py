"""The real app served on localhost, driven with gradio_client: segment, select, edit on the canvas,
save, export; and the bad-input list (each a specific message, the session goes on)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(weights: Path, tok: Path, db: Path, extra: list[str] | None = None,
                 env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "2", **(env_extra or {})}
    # the tokenizer sits next to the weights for our safetensors files
    if tok.parent != weights.parent:
        raise RuntimeError("tokenizer must sit next to the weights")
    cmd = [sys.executable, "launch.py", "--weights", str(weights), "--db", str(db), "--port", str(port), "--device", "cpu",
           *(extra or [])]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Running on local URL" in line:
            proc.startup_lines = lines  # what it printed until it served (tests read its warnings)
            return proc, url
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("app did not start:\n" + "".join(lines[-30:]))


@pytest.fixture(scope="module")
def server(studio_weights, tmp_path_factory):
    weights, tok = studio_weights
    db = tmp_path_factory.mktemp("db") / "studio.sqlite"
    tmp = tmp_path_factory.mktemp("server_tmp")
    proc, url = start_server(weights, tok, db, env_extra={"TMPDIR": str(tmp)})
    yield url, db
    proc.terminate()
    proc.wait(timeout=30)
    # the app leaves nothing in the system's temporary folder (exports live next to the database)
    assert [p.name for p in tmp.iterdir() if p.name.startswith("deris")] == []
    exports = db.with_name("studio_exports")
    assert not exports.exists() or all(p.suffix == ".zip" for p in exports.iterdir())


@pytest.fixture(scope="module")
def sample_image(tmp_path_factory) -> Path:
    from deris_core.synthetic import generate

    root = tmp_path_factory.mktemp("syn")
    generate(root, seed=5, images=4)
    return sorted((root / "images" / "train2014").glob("*.png"))[0]


def _verdict(out) -> str:
    return out[1]


def test_segment_select_correct_save_export(server, sample_image: Path, tmp_path: Path) -> None:
    url, db = server
    c = Client(url, verbose=False)
    out = c.predict(handle_file(str(sample_image)), "the red circle", 0.7, 0.5, api_name="/segment")
    canvas, verdict, cands, gallery, parts, *ref_boxes = out  # then the per-ref boxes
    assert canvas["image"] and canvas["w"] > 0 and "existence probability" in verdict
    choices = [v for _, v in cands["choices"]]
    assert len(choices) == 10 and len(gallery) == 10  # every candidate query, with its mask and score
    scores = [float(label.split("score ")[1].split()[0]) for label, _ in cands["choices"]]
    assert scores == sorted(scores, reverse=True)
    # Thresholds re-render without a new forward pass: everything above 0 is referred.
    out = c.predict(0.0, 0.5, api_name="/rethreshold")
    assert len(out[2]["value"]) == 10 and "10 target instances" in _verdict(out)
    # Select two candidates (the target set); then what the canvas sends after its edits
    out = c.predict([choices[0], choices[1]], api_name="/select_candidates")
    assert sorted(out[2]["value"]) == sorted([choices[0], choices[1]]) and "2 target instances" in _verdict(out)
    value = out[0]

    def edit(targets: list[dict], no_target: bool = False) -> dict:
        return {**value, "edit": {"targets": targets, "no_target": no_target, "ops": 1}}

    assert "NO TARGET" in c.predict(edit([], True), api_name="/canvas_edit")[0]
    two = [{"candidate": choices[0], "edited": False}, {"candidate": choices[1], "edited": False}]
    assert "2 target instances" in c.predict(edit(two), api_name="/canvas_edit")[0]  # the browser's undo
    # A new instance drawn on the canvas at full resolution.
    from app.views.canvas import encode_mask

    h, w = np.asarray(Image.open(sample_image)).shape[:2]
    drawn = np.zeros((h, w), bool)
    drawn[5:25, 5:40] = True
    value = edit(two + [{"rle": encode_mask(drawn), "candidate": None, "edited": True}])
    assert "3 target instances" in c.predict(value, api_name="/canvas_edit")[0]
    msg, image_refs, *_ = c.predict("tester", "val", "done", "the circle\nthat red round shape", "the red circle", value,
                                     api_name="/save")
    progress, table, info, _ = c.predict(1, "", "", "", api_name="/refresh")
    assert msg.startswith("Saved ref") and "<b>1 refs</b>" in progress and info.startswith("1 refs")
    # A second expression on the same image reuses the cached features; save it as no-target.
    out = c.predict(handle_file(str(sample_image)), "the purple elephant", 0.7, 0.5, api_name="/segment")
    nothing = {**out[0], "edit": {"targets": [], "no_target": True, "ops": 1}}  # X on the canvas
    with pytest.raises(AppError, match="You wrote the current content of ref"):  # nobody accepts their own work
        c.predict("tester", "testB", "reviewed", "", "the purple elephant", nothing, api_name="/save")
    msg, image_refs, *_ = c.predict("tester", "testB", "done", "", "the purple elephant", nothing, api_name="/save")
    assert len(image_refs["data"]) == 2  # both refs of this image are listed beside it
    checker = Client(url, verbose=False)  # another person accepts it in the Review view
    assert "by <b>tester</b>" in checker.predict("", "testB", None, False, api_name="/review_previous")[0]
    checker.predict(None, "", "checker", "", "testB", None, False, api_name="/review_accept")
    progress, table, info, _ = c.predict(1, "reviewed", "", "", api_name="/refresh")
    assert info.startswith("1 refs") and table["data"][0][5] == "testB"
    from app.store import Store

    st = Store(db).stats()
    assert st["refs"] == 2 and st["no_target_refs"] == 1 and st["images"] == 1
    zpath = c.predict(api_name="/export")
    with zipfile.ZipFile(zpath) as zf:
        grefs = json.loads(zf.read("grefcoco/grefs(unc).json"))
        coco = json.loads(zf.read("grefcoco/instances.json"))
        assert any(n.startswith("images/train2014/") for n in zf.namelist())
    from app.dataset.cli import validate_grefcoco

    assert validate_grefcoco(coco, grefs) == []
    first = next(r for r in grefs if r["split"] == "val")
    assert len(first["ann_id"]) == 3 and [s["raw"] for s in first["sentences"]] == ["the red circle", "the circle", "that red round shape"]
    drawn = next(a for a in coco["annotations"] if a["bbox"] == [5.0, 5.0, 35.0, 20.0])
    assert drawn["area"] == 35 * 20  # the edited mask came back at full resolution
    nt = next(r for r in grefs if r["split"] == "testB")
    assert nt["ann_id"] == [-1] and nt["no_target"] is True and nt["status"] == "reviewed"
    # Reopen the saved ref: the same targets come back.
    out = c.predict(first["ref_id"], api_name="/open_ref")
    assert out[1] == "the red circle" and "3 target instances" in out[7]


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {}
    ok = Image.new("RGB", (64, 48), (200, 30, 30))
    p = tmp / "corrupt.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    files["corrupt"] = p
    p = tmp / "text.png"
    p.write_text("this is not an image at all")
    files["not-an-image"] = p
    buf = io.BytesIO()
    ok.save(buf, "JPEG")
    p = tmp / "truncated.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["truncated"] = p
    # A PNG whose header declares 40000x40000 (a decompression bomb); 74 bytes on disk.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    p = tmp / "bomb.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
                  + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    files["bomb"] = p
    p = tmp / "long.png"
    Image.new("RGB", (30000, 10)).save(p)
    files["30000x10"] = p
    return files


def _good_files(tmp: Path) -> dict[str, Path]:
    files = {}
    for name, img in {
        "1x1": Image.new("RGB", (1, 1), (10, 200, 10)),
        "grey": Image.new("L", (40, 30), 128),
        "rgba": Image.new("RGBA", (40, 30), (255, 0, 0, 100)),
        "cmyk": Image.new("CMYK", (40, 30), (0, 255, 255, 0)),
        "16bit": Image.fromarray(np.full((30, 40), 40000, np.uint16)),
    }.items():
        p = tmp / f"{name}.{'jpg' if name == 'cmyk' else 'png'}"
        img.save(p)
        files[name] = p
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    p = tmp / "animated.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)
    files["animated"] = p
    exif_img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = exif_img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    p = tmp / "exif.jpg"
    exif_img.save(p, exif=exif)
    files["exif"] = p
    return files


def test_bad_inputs_get_specific_messages_and_the_session_goes_on(server, sample_image: Path, tmp_path: Path) -> None:
    url, _ = server
    c = Client(url, verbose=False)
    expected = {"corrupt": "corrupt.png could not be decoded", "not-an-image": "not a recognised image file", "truncated": "truncated or corrupt", "bomb": "too many pixels",
                "30000x10": "aspect ratio"}
    for name, path in _bad_files(tmp_path).items():
        with pytest.raises(AppError, match=expected[name]):
            c.predict(handle_file(str(path)), "the red circle", 0.7, 0.5, api_name="/segment")
        out = c.predict(handle_file(str(sample_image)), "the red circle", 0.7, 0.5, api_name="/segment")
        assert "existence probability" in _verdict(out)  # the session goes on
    for name, path in _good_files(tmp_path).items():
        out = c.predict(handle_file(str(path)), "the red circle", 0.7, 0.5, api_name="/segment")
        assert "existence probability" in _verdict(out), name
        if name == "exif":
            assert (out[0]["w"], out[0]["h"]) == (20, 40)  # EXIF rotation applied: 20 wide, 40 high
    for text, message in (("", "Type an expression"), ("   ", "Type an expression"), ("?!.,", "empty after cleaning"),
                          ("x" * 10_000, "characters long")):
        with pytest.raises(AppError, match=message):
            c.predict(handle_file(str(sample_image)), text, 0.7, 0.5, api_name="/segment")
    out = c.predict(handle_file(str(sample_image)), "the " + "very " * 200 + "red circle", 0.7, 0.5, api_name="/segment")
    assert "existence probability" in _verdict(out)  # long but allowed: truncated with a warning
    out = c.predict(handle_file(str(sample_image)), "красный круг 赤い円", 0.7, 0.5, api_name="/segment")
    assert "existence probability" in _verdict(out)  # non-Latin text is tokenised (unknown pieces)
    with pytest.raises(ValueError):  # the model cannot be switched unless the operator allowed it at launch
        c.predict(str(tmp_path / "missing.pth"), api_name="/load_weights")
    with pytest.raises(AppError, match="Nothing to save"):
        Client(url, verbose=False).predict("x", "train", "done", "", "", api_name="/save")
    out = c.predict(handle_file(str(sample_image)), "the red circle", 0.7, 0.5, api_name="/segment")
    assert "existence probability" in _verdict(out)  # the previous model is still serving


def test_model_panel_only_offers_what_the_operator_allowed(studio_weights, tmp_path: Path) -> None:
    weights, tok = studio_weights
    junk = tmp_path / "secret_dir" / "junk.safetensors"
    junk.parent.mkdir()
    junk.write_bytes(b"not weights")
    proc, url = start_server(weights, tok, tmp_path / "db.sqlite", ["--allow-weights", str(junk)])
    try:
        c = Client(url, verbose=False)
        with pytest.raises(AppError, match="not in the list of choices|Pick one of the weights"):
            c.predict("/etc/passwd", "", api_name="/load_weights")
        out = c.predict("junk.safetensors", "", api_name="/load_weights")  # said in the panel, no error badge
        assert "Could not load junk.safetensors" in out[2] and "still in use" in out[2]
        assert "secret_dir" not in out[2]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_launch_turns_gradio_run_history_off_where_gradio_has_one() -> None:
    """``run_history=False`` goes to ``launch`` only where that parameter exists (earlier Gradio 6
    releases have no run history, and would refuse an unknown keyword)."""
    import gradio as gr

    import launch

    with gr.Blocks() as demo:
        gr.Markdown("x")
    assert launch.no_run_history(demo) == {"run_history": False}

    class EarlierBlocks:
        def launch(self, server_name=None, server_port=None):  # no run_history parameter
            return None

    assert launch.no_run_history(EarlierBlocks()) == {}
