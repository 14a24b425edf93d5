"""Tokenizer, predictor, weight resolution, CLI and benchmark on a tiny config (CPU, no downloads)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from deris_core.checkpoint import save_weights
from deris_core.config import deris_tiny
from deris_core.hardware import choose_precision
from deris_core.model import build_deris
from deris_core.predictor import Predictor
from deris_core.preprocess import ImageError, load_image
from deris_core.tokenizer import BEiT3Tokenizer, TokenizerError, clean_expression, train_sentencepiece
from deris_core.weights import WeightsError, load_predictor, resolve

SENTENCES = [
    "the orange cat lying down", "a red car on the left", "the two dogs on the right", "all blue circles",
    "the largest square", "the man with a hat", "nothing here", "the small green triangle near the top",
]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    return train_sentencepiece(SENTENCES, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=60)


@pytest.fixture(scope="module")
def predictor(tok_path):
    torch.manual_seed(0)
    cfg = deris_tiny(vocab_size=200, max_token=20)
    return Predictor(build_deris(cfg), BEiT3Tokenizer(tok_path, max_token=20))


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    img[10:40, 20:50] = (255, 0, 0)
    return img


# --- tokenizer ----------------------------------------------------------------------------


def test_clean_expression_matches_official():
    assert clean_expression("The Man's (red) hat: left-most/top!?") == "the mans red hat left most top"


def test_encoding_layout(tok_path):
    tok = BEiT3Tokenizer(tok_path, max_token=12)
    e = tok.encode("the red car")
    ids, mask = e.ids.tolist(), e.padding_mask.tolist()
    assert ids[0] == 0 and ids[e.num_tokens - 1] == 2 and all(i == 1 for i in ids[e.num_tokens :])
    assert mask == [0] * e.num_tokens + [1] * (12 - e.num_tokens)
    assert all(i >= 3 for i in ids[1 : e.num_tokens - 1])


def test_truncation_and_limits(tok_path):
    tok = BEiT3Tokenizer(tok_path, max_token=8)
    e = tok.encode("the small green triangle near the top " * 5)
    assert e.truncated and e.num_tokens == 8 and e.ids[-1].item() == 2
    with pytest.raises(TokenizerError, match="empty after cleaning"):
        tok.encode("  ?!. ")
    with pytest.raises(TokenizerError, match="characters long"):
        tok.encode("x" * 10_000)
    e = tok.encode("猫が左にいる")  # non-Latin: unknown pieces become <unk>, no crash
    assert e.num_tokens >= 3


def test_tokenizer_file_errors(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        BEiT3Tokenizer(tmp_path / "missing.spm")
    bad = tmp_path / "bad.spm"
    bad.write_bytes(b"garbage")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        BEiT3Tokenizer(bad)


# --- predictor ---------------------------------------------------------------------------


def test_cached_equals_uncached(predictor, photo):
    state = predictor.set_image(photo)
    a = predictor.predict("the red car", image=state)
    state2 = predictor.set_image(photo)
    b = predictor.predict("the red car", image=state2)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert torch.equal(a.mask_logits, b.mask_logits)
    # and equal to running the whole model from scratch
    from deris_core.preprocess import preprocess

    pre = preprocess(photo)
    enc = predictor.tokenizer.encode("the red car")
    with torch.inference_mode():
        out = predictor.model(pre.image, pre.image_mini, enc.ids[None], enc.padding_mask[None])
    torch.testing.assert_close(out.pred_masks[0], a.mask_logits, rtol=0, atol=1e-5)


def test_thresholds_do_not_rerun_network(predictor, photo):
    state = predictor.set_image(photo)
    pred = predictor.predict("the two dogs", image=state, score_threshold=0.0)
    calls = predictor.forward_calls
    lo = pred.with_thresholds(score_threshold=0.0, mask_threshold=0.1)
    hi = pred.with_thresholds(score_threshold=1.0, mask_threshold=0.9)
    assert predictor.forward_calls == calls
    assert hi.no_target and hi.union_mask.sum() == 0
    assert not lo.no_target and lo.union_mask.sum() >= hi.union_mask.sum()
    assert lo.masks.sum() >= hi.masks.sum()
    assert lo.masks.shape == (pred.num_candidates, 60, 90)


def test_predict_batch_equals_loop(predictor, photo):
    state = predictor.set_image(photo)
    exprs = ["the red car", "all blue circles on the left side of the picture", "cat"]
    batch = predictor.predict_batch(exprs, image=state)
    for e, b in zip(exprs, batch):
        single = predictor.predict(e, image=state)
        np.testing.assert_allclose(single.scores, b.scores, atol=1e-5)
        torch.testing.assert_close(single.mask_logits, b.mask_logits, rtol=0, atol=1e-4)
        assert single.existence == pytest.approx(b.existence, abs=1e-5)


def test_prediction_contents(predictor, photo):
    state = predictor.set_image(photo)
    p = predictor.predict("the red car", image=state, score_threshold=0.0)
    q = predictor.cfg.num_queries
    assert p.scores.shape == (q,) and p.boxes.shape == (q, 4) and 0 <= p.existence <= 1
    assert p.order[0] == int(np.argmax(p.scores))
    assert set(p.referred) == set(np.nonzero(p.scores > 0.0)[0].tolist())
    np.testing.assert_array_equal(p.union_mask, p.masks[p.referred].max(0))
    d = p.to_dict()
    assert json.loads(json.dumps(d))["candidates"][0]["index"] == p.order[0]
    assert {"decode", "tokenize"} <= set(p.timings)


def test_full_size_masks_are_lazy_and_exact(predictor, photo):
    """One candidate's mask at full size equals the nearest resize of its 384x384 mask; areas
    need no resizing; a new score threshold reuses the masks."""
    from deris_core.postprocess import resize_nearest

    state = predictor.set_image(photo)
    p = predictor.predict("the red car", image=state, score_threshold=0.0, mask_threshold=0.45)
    assert p.low_res_logits.shape[-2:] == (96, 96)
    k = p.order[0]
    np.testing.assert_array_equal(p.mask(k), resize_nearest(p.masks_384[k], p.original_size))
    assert sum(key[0] == "mask" for key in p._cache if isinstance(key, tuple)) == 1  # only the one asked for
    np.testing.assert_array_equal(p.areas(), p.masks.reshape(p.num_candidates, -1).sum(1))
    again = p.with_thresholds(score_threshold=0.5)
    assert again.mask(k) is p.mask(k)
    other = p.with_thresholds(mask_threshold=0.9)
    assert other.masks_384.sum() <= p.masks_384.sum()


def test_linear_weights_packed_in_place(predictor):
    """On CPU the predictor's linear weights live only in oneDNN's layout; the state dict and
    the training path still see plain weights, and the parameter objects are kept."""
    from deris_core.model import layers

    if not layers._ONEDNN:
        pytest.skip("oneDNN not available")
    lins = [m for m in predictor.model.modules() if isinstance(m, layers.Linear)]
    assert lins and all(m.weight.is_mkldnn for m in lins)
    sd = predictor.model.state_dict()
    assert all(not v.is_mkldnn for v in sd.values())
    lin = layers.Linear(8, 4)
    plain, ref = lin.weight, lin.weight.detach().clone()
    x = torch.randn(3, 8)
    with torch.inference_mode():
        y = lin(x)
    assert lin.weight.is_mkldnn and lin.state_dict()["weight"].equal(ref)
    assert sum(p.numel() for p in lin.parameters()) == 36
    y2 = lin(x)  # autograd: back to the plain parameter, same object
    assert lin.weight is plain and lin.weight.equal(ref) and lin.weight.requires_grad
    torch.testing.assert_close(y, y2.detach(), rtol=0, atol=1e-5)
    with torch.inference_mode():
        lin(x)
    lin.load_state_dict({"weight": ref * 2, "bias": lin.bias.detach()})
    assert lin.weight is plain and lin.weight.equal(ref * 2)


def test_bf16_predictor(tok_path, photo):
    """bf16 runs the whole network in bfloat16 (half the parameter memory) and stays close to fp32."""
    torch.manual_seed(0)
    cfg = deris_tiny(vocab_size=200, max_token=20)
    model32 = build_deris(cfg)
    model = build_deris(cfg, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.state_dict().values() if p.is_floating_point())
    model.load_state_dict(model32.state_dict())
    p16 = Predictor(model, BEiT3Tokenizer(tok_path, max_token=20), dtype=torch.bfloat16)
    p32 = Predictor(model32, BEiT3Tokenizer(tok_path, max_token=20))
    assert p16.dtype == torch.bfloat16 and p32.dtype == torch.float32
    a = p16.predict("the red car", image=p16.set_image(photo))
    b = p32.predict("the red car", image=p32.set_image(photo))
    assert a.low_res_logits.dtype == torch.float32
    np.testing.assert_allclose(a.scores, b.scores, atol=0.02)  # measured 0.0076 (random tiny model)
    with pytest.raises(ValueError, match="dtype"):
        Predictor(build_deris(cfg), BEiT3Tokenizer(tok_path, max_token=20), dtype=torch.float16)


def test_concurrent_callers_keep_their_images(predictor, photo):
    """Two threads share one predictor with different images; each gets its own image's result."""
    other = np.zeros((40, 30, 3), dtype=np.uint8)
    sa, sb = predictor.set_image(photo), predictor.set_image(other)
    expected = {"a": predictor.predict("the red car", image=sa), "b": predictor.predict("the red car", image=sb)}
    results: dict[str, list] = {"a": [], "b": []}

    def work(name, state):
        for _ in range(3):
            results[name].append(predictor.predict("the red car", image=state))

    threads = [threading.Thread(target=work, args=("a", sa)), threading.Thread(target=work, args=("b", sb))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for name in ("a", "b"):
        assert len(results[name]) == 3
        for r in results[name]:
            assert r.original_size == expected[name].original_size
            np.testing.assert_allclose(r.scores, expected[name].scores, atol=1e-6)
    assert not np.allclose(expected["a"].scores, expected["b"].scores)


def test_no_image_and_bad_thresholds(tok_path):
    p = Predictor(build_deris(deris_tiny(vocab_size=200, max_token=20)), BEiT3Tokenizer(tok_path, max_token=20))
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict("the cat")
    p.set_image(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="score_threshold"):
        p.predict("the cat", score_threshold=1.5)


def test_tokenizer_model_mismatch(tok_path):
    with pytest.raises(ValueError, match="max_token"):
        Predictor(build_deris(deris_tiny(max_token=20)), BEiT3Tokenizer(tok_path, max_token=30))


# --- images ------------------------------------------------------------------------------


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_image_modes(tmp_path):
    assert load_image(Image.new("L", (5, 4), 128)).shape == (4, 5, 3)
    rgba = load_image(Image.new("RGBA", (5, 4), (255, 0, 0, 0)))
    assert (rgba == 255).all()  # fully transparent -> white
    assert load_image(Image.new("CMYK", (5, 4))).shape == (4, 5, 3)
    i16 = Image.fromarray(np.full((4, 5), 65535, np.uint16))
    assert load_image(_png(i16)).max() == 255
    assert load_image(np.zeros((4, 5), np.float32)).dtype == np.uint8
    # EXIF orientation 6 (rotate 90 CW): width and height swap
    img = Image.new("RGB", (8, 4))
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert load_image(path).shape == (8, 4, 3)
    # animated GIF: first frame
    frames = [Image.new("P", (6, 6), i) for i in range(3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert load_image(gif).shape == (6, 6, 3)


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge size (a decompression bomb): IHDR, a small IDAT, IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def test_bad_images(tmp_path, predictor):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(_png(Image.new("RGB", (50, 50)))[:60])
    with pytest.raises(ImageError):
        predictor.set_image(corrupt)
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="not a recognised image"):
        predictor.set_image(tmp_path / "junk.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        predictor.set_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="empty"):
        predictor.set_image(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ImageError, match="not found"):
        predictor.set_image(tmp_path / "missing.png")
    # a PNG whose header declares 40000x40000 pixels: refused before any pixel is decoded
    big = _png_header_only(40000, 40000)
    with pytest.raises(ImageError, match="too many pixels"):  # PIL's own guard, at open
        predictor.set_image(big)
    with pytest.raises(ImageError, match="too large .*81 MP"):  # ours, from the header, before decoding
        predictor.set_image(_png_header_only(9000, 9000))
    # 1x1 and very thin images work
    assert predictor.set_image(np.zeros((1, 1, 3), np.uint8)).original_size == (1, 1)
    assert predictor.set_image(np.zeros((10, 3000, 3), np.uint8)).original_size == (10, 3000)


# --- weights, CLI, benchmark -------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tok_path):
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(3)
    cfg = deris_tiny(vocab_size=200, max_token=20)
    save_weights(build_deris(cfg), d / "model.safetensors", cfg)
    (d / "tokenizer.spm").write_bytes(tok_path.read_bytes())
    return d / "model.safetensors"


def test_load_predictor_local(saved_model, photo):
    p = load_predictor(saved_model, device="cpu")
    assert p.cfg.name == "deris-tiny"
    p.set_image(photo)
    assert p.predict("the cat").num_candidates == p.cfg.num_queries
    q = load_predictor(saved_model, device="cpu", dtype="bf16")  # bf16 where the CPU has it, else fp32 with a note
    expected = choose_precision("bf16", "cpu").dtype
    assert q.dtype == expected and next(q.model.parameters()).dtype == expected
    assert q.precision.requested == "bf16" and (q.precision.note is None) == (expected == torch.bfloat16)
    q.set_image(photo)
    assert q.predict("the cat").num_candidates == q.cfg.num_queries
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_predictor(saved_model, device="cpu", dtype="fp16")


def test_resolve_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="neither a file nor a published model name"):
        resolve(tmp_path / "nope.pth")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsError) as err:
        resolve("deris-l-grefcoco")
    msg = str(err.value)
    assert "DeRIS-L-grefcoco.pth" in msg and "Dmmm997/DeRIS" in msg and "--weights PATH" in msg
    assert "not in the local cache, and HF_HUB_OFFLINE is set" in msg
    # a missing tokenizer of an official checkpoint: tests/test_tokenizer_source.py


def test_load_predictor_rejects_a_pth_that_is_not_deris(tmp_path):
    """A .pth of some other model says what it is missing instead of raising a bare KeyError."""
    from deris_core.checkpoint import CheckpointError

    other = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(2, 3, 1, 1)}}, other)
    (tmp_path / "beit3.spm").write_bytes(b"")  # resolve() wants a tokenizer next to official weights
    with pytest.raises(CheckpointError, match="not an official DeRIS checkpoint: it has no .*text_embed.*conv1.weight"):
        load_predictor(other, device="cpu")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deris_core.tools.predict", *args], capture_output=True, text=True, timeout=300)


def test_cli_json_and_overlay(saved_model, tmp_path, photo):
    img = tmp_path / "photo.png"
    Image.fromarray(photo).save(img)
    out = tmp_path / "overlay.png"
    r = _cli(str(img), "the red car", "--weights", str(saved_model), "--device", "cpu", "--json", "--out", str(out), "--score-threshold", "0")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    pred = data["predictions"][0]
    assert pred["expression"] == "the red car" and len(pred["candidates"]) == 6 and "no_target" in pred
    assert Image.open(out).size == (90, 60)


def test_cli_errors_are_one_line(saved_model, tmp_path):
    r = _cli(str(tmp_path / "missing.png"), "the cat", "--weights", str(saved_model), "--device", "cpu")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not found" in r.stderr and "Traceback" not in r.stderr
    img = tmp_path / "ok.png"
    Image.new("RGB", (10, 10)).save(img)
    r = _cli(str(img), "?!", "--weights", str(saved_model), "--device", "cpu")
    assert r.returncode == 2 and "empty after cleaning" in r.stderr and "Traceback" not in r.stderr


def test_benchmark_runs(capsys):
    from deris_core.tools import bench

    assert bench.main(["--config", "deris-tiny", "--runs", "1", "--warmup", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("full_forward_s", "cached_predict_s", "batch8_per_expression_s", "peak_rss_mb", "device", "dtype", "torch_threads"):
        assert key in data
    assert data["peak_rss_with_batch8_mb"] >= data["peak_rss_mb"] > 0  # the official protocol's peak, then with batches
    assert data["precision"]["dtype"] == "fp32" and data["cpu"]["name"] and data["cpu"]["kind"]
    for dtype in ("bf16", "auto"):  # never a crash: what runs is what the hardware allows, and the JSON says so
        assert bench.main(["--config", "deris-tiny", "--runs", "1", "--warmup", "0", "--dtype", dtype, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        chosen = choose_precision(dtype, "cpu")
        assert data["dtype"] == str(chosen.dtype).removeprefix("torch.")
        assert data["precision"]["requested"] == dtype and data["precision"]["kernels"] == chosen.kernels


def test_limit_heap_growth_is_opt_in_idempotent_and_safe():
    import platform

    code = ("import os; from deris_core import runtime as r; "
            "assert r.configure_from_env() is False; os.environ['DERIS_PIN_MALLOC'] = '1'; "
            "a = r.configure_from_env(); b = r.limit_heap_growth(); assert a == b; print(a)")
    env = {k: v for k, v in os.environ.items() if k != "DERIS_PIN_MALLOC"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr  # off unless asked for; a second call changes nothing
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert r.stdout.strip() == "True"


def test_flop_count_and_gemm_peak(capsys):
    from deris_core.tools import bench

    assert bench.main(["flops", "--config", "deris-tiny", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gflop"]["image"]["convolution"] > 0 and data["gflop"]["image"]["linear"] > 0
    assert data["gflop"]["text"]["linear"] > 0 and data["peak"]["fp32_gflops"] > 0
