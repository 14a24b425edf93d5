"""deris_core.hardware: what the machine offers, the precision that follows, and the fallbacks.

The "no bf16" answer is forced here (a monkeypatched capability), so the fallback is covered on
every machine, AVX-512 ones included; one test also runs the CLI in a subprocess with oneDNN and
PyTorch capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``), the rehearsal of an
AVX2-only CPU that reproduces the old crash of ``--dtype bf16`` there.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from deris_core import hardware
from deris_core.config import deris_tiny
from deris_core.hardware import CpuInfo, PrecisionError, choose_precision, cpu_info, resolve_device
from deris_core.model import build_deris, layers
from deris_core.predictor import Predictor

from .conftest import BUNDLED, ROOT

NO_BF16 = CpuInfo(name="Test CPU (AVX2 only)", arch="x86_64", isa="AVX2", flags=("avx2", "fma3"),
                  onednn_bf16=False, fast_bf16=False)
FAST_BF16 = CpuInfo(name="Test CPU (AVX-512 BF16)", arch="x86_64", isa="AVX512",
                    flags=("avx2", "avx512_f", "avx512_bw", "avx512_vl", "avx512_dq", "avx512_bf16"),
                    onednn_bf16=True, fast_bf16=True)


@pytest.fixture
def no_bf16(monkeypatch):
    """This process's CPU answers "no bf16 at all", whatever it really is."""
    monkeypatch.setattr(hardware, "cpu_info", lambda: NO_BF16)
    return NO_BF16


def test_this_machine_is_described():
    info = cpu_info()
    print(f"\n{info.summary()}; kind {info.kind}; onednn bf16 {info.onednn_bf16}; fast bf16 {info.fast_bf16}")
    assert info.name and info.arch and info.isa
    assert not info.fast_bf16 or info.onednn_bf16  # fast bf16 always goes through oneDNN's bf16 path
    if info.arch == "x86_64" and info.fast_bf16:
        assert {"avx512_bf16", "amx_bf16"} & set(info.flags)
    p = choose_precision("auto", "cpu")
    assert p.name == ("bf16" if info.fast_bf16 else "int8" if hardware.int8_supported() else "fp32")


def test_requests_are_validated_and_read_from_the_environment(monkeypatch):
    assert hardware.normalize_request("BFloat16") == "bf16" and hardware.normalize_request("float32") == "fp32"
    with pytest.raises(PrecisionError, match="dtype must be one of auto, fp32, bf16"):
        hardware.normalize_request("fp16")
    monkeypatch.setenv("DERIS_DTYPE", "fp32")
    assert choose_precision(None, "cpu").requested == "fp32"
    monkeypatch.delenv("DERIS_DTYPE")
    assert choose_precision(None, "cpu").requested == "auto"


def test_no_bf16_cpu_falls_back_to_fp32_with_a_note(no_bf16):
    asked = choose_precision("bf16", "cpu")
    assert asked.dtype == torch.float32 and asked.requested == "bf16"
    assert asked.note == "bf16 needs a CPU with AVX-512 BF16 or AMX (or ARM BF16); running fp32"
    assert "no bf16 instructions" in asked.reason
    auto = choose_precision("auto", "cpu")
    assert auto.dtype == torch.float32 and auto.note is None  # auto never complains: it takes the fast path
    assert auto.name == ("int8" if hardware.int8_supported() else "fp32")
    assert choose_precision("fp32", "cpu").dtype == torch.float32
    assert hardware.packable_dtypes() == (torch.float32,)


def test_fast_bf16_cpu_takes_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_info", lambda: FAST_BF16)
    for req in ("auto", "bf16"):
        p = choose_precision(req, "cpu")
        assert p.dtype == torch.bfloat16 and p.note is None and "AVX-512 BF16" in p.kernels
    assert choose_precision("fp32", "cpu").dtype == torch.float32


def test_onednn_isa_cap_is_honoured():
    assert not hardware._onednn_isa_allows("AVX2", "AVX512_CORE_BF16")
    assert not hardware._onednn_isa_allows("avx512_core", "AVX512_CORE_BF16")
    assert hardware._onednn_isa_allows("AVX512_CORE_AMX", "AVX512_CORE_BF16")
    assert hardware._onednn_isa_allows("", "AVX512_CORE_BF16") and hardware._onednn_isa_allows("ALL", "AVX2")


def test_bf16_linears_are_not_packed_where_onednn_refuses_bf16(no_bf16):
    """A bf16 model built by hand on such a CPU runs PyTorch's own bf16 kernels instead of
    crashing in oneDNN's weight reorder; fp32 is still packed."""
    torch.manual_seed(0)
    cfg = deris_tiny(vocab_size=200, max_token=20)
    lin16 = layers.Linear(8, 4).to(torch.bfloat16)
    with torch.inference_mode():
        y = lin16(torch.randn(3, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and not lin16.weight.is_mkldnn
    model = build_deris(cfg, dtype=torch.bfloat16)
    ids = torch.full((1, 20), 1, dtype=torch.long)

    class _Ids:
        max_token, vocab_size = 20, 200

    p = Predictor(model, _Ids(), dtype=torch.bfloat16)  # type: ignore[arg-type]
    assert "bf16 emulated" in p.precision.kernels and "PyTorch bf16 kernels" in p.precision.kernels
    state = p.set_image(np.zeros((40, 50, 3), np.uint8))
    pred = p.predict_tokens(ids, torch.zeros_like(ids), image=state)[0]
    assert np.isfinite(pred.scores).all()
    assert not any(m.weight.is_mkldnn for m in model.modules() if isinstance(m, layers.Linear))
    if layers.prepack_active():
        lin32 = layers.Linear(8, 4)
        with torch.inference_mode():
            lin32(torch.randn(3, 8))
        assert lin32.weight.is_mkldnn


def test_load_predictor_bf16_on_a_cpu_without_bf16_runs_fp32(no_bf16, caplog):
    from deris_core.weights import load_predictor

    if not (BUNDLED / "model.safetensors").is_file():
        pytest.skip("no bundled model in this checkout")
    with caplog.at_level(logging.WARNING, logger="deris_core.weights"):
        p = load_predictor("bundled", device="cpu", dtype="bf16")
    assert p.dtype == torch.float32 and next(p.model.parameters()).dtype == torch.float32
    assert "bf16 needs a CPU with AVX-512 BF16 or AMX" in caplog.text
    pred = p.predict("the yellow circle", image=p.set_image(np.zeros((64, 64, 3), np.uint8)))
    assert pred.num_candidates == p.cfg.num_queries


def test_predict_cli_says_what_ran(no_bf16, tmp_path, capsys):
    from deris_core.tools import predict

    if not (BUNDLED / "model.safetensors").is_file():
        pytest.skip("no bundled model in this checkout")
    img = tmp_path / "img.png"
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(img)
    assert predict.main([str(img), "the red circle", "--dtype", "bf16", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["precision"]["dtype"] == "fp32" and out["precision"]["requested"] == "bf16"
    assert out["precision"]["note"].startswith("bf16 needs a CPU")


def test_avx2_rehearsal_in_a_subprocess(tmp_path):
    """With oneDNN, FBGEMM and PyTorch capped at AVX2 the old code crashed in ``--dtype bf16``
    (``mkldnn_reorder_linear_weight: bf16 path needs ...``); now bf16 runs fp32 and says why, and
    auto takes int8."""
    if not (BUNDLED / "model.safetensors").is_file():
        pytest.skip("no bundled model in this checkout")
    img = tmp_path / "img.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(img)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
    env.pop("DERIS_DTYPE", None)
    for dtype in ("bf16", "auto"):
        r = subprocess.run([sys.executable, "-m", "deris_core.tools.predict", str(img), "the blue square", "--dtype", dtype,
                            "--device", "cpu", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "mkldnn" not in r.stderr and "Traceback" not in r.stderr
        out = json.loads(r.stdout)
        assert out["precision"]["dtype"] == ("fp32" if dtype == "bf16" else "int8") and "AVX2" in out["precision"]["kernels"]
        if dtype == "bf16":
            assert r.stderr.strip() == "note: bf16 needs a CPU with AVX-512 BF16 or AMX (or ARM BF16); running fp32"
        else:
            assert r.stderr.strip() == ""


def test_device_auto_picks_mps_where_pytorch_offers_it(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "mps_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="deris_core.hardware"):
        assert resolve_device("auto").type == "mps"
    assert "MPS" in caplog.text and "untested" in caplog.text
    p = choose_precision("bf16", "mps")
    assert p.dtype == torch.float32 and p.note and "untested" in p.note
    assert choose_precision("auto", "mps").note is None
    monkeypatch.setattr(hardware, "mps_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="MPS backend is not available"):
        resolve_device("mps")


def test_cuda_precision_without_a_gpu_answer(monkeypatch):
    monkeypatch.setattr(hardware, "cuda_bf16_supported", lambda: True)
    assert choose_precision("auto", "cuda").dtype == torch.bfloat16
    monkeypatch.setattr(hardware, "cuda_bf16_supported", lambda: False)
    p = choose_precision("bf16", "cuda")
    assert p.dtype == torch.float32 and "compute capability 8.0" in p.note


def test_int8_request(monkeypatch):
    if hardware.int8_supported():
        p = choose_precision("int8", "cpu")
        assert p.int8 and p.name == "int8" and p.dtype == torch.float32 and p.note is None
        assert "int8 dynamic-quantized linears" in p.kernels
    monkeypatch.setattr(hardware, "int8_supported", lambda: False)
    p = choose_precision("int8", "cpu")
    assert not p.int8 and p.note.startswith("int8 needs an x86 CPU with AVX2")
    monkeypatch.setattr(hardware, "cuda_bf16_supported", lambda: True)
    p = choose_precision("int8", "cuda")
    assert not p.int8 and p.dtype == torch.bfloat16 and p.note == "int8 needs the CPU; running bf16"


def test_int8_linear_is_close_one_way_and_trainable_again():
    if not hardware.int8_supported():
        pytest.skip("needs PyTorch's quantized CPU kernels (x86 with AVX2)")
    torch.manual_seed(0)
    lin = layers.Linear(64, 32)
    x = torch.randn(5, 64)
    ref = lin(x).detach()
    lin.quantize_int8_()
    assert lin.weight.numel() == 0 and lin._int8 is not None
    with torch.inference_mode():
        y = lin(x)
    assert y.shape == ref.shape and (y - ref).abs().max() < 0.05 * ref.abs().max()
    sd = lin.state_dict()  # the dequantized weight: what a save or a copy sees
    assert sd["weight"].shape == (32, 64) and lin._int8 is None
    lin2 = layers.Linear(64, 32)
    lin2.quantize_int8_()
    lin2.load_state_dict(sd)  # a load replaces the int8 weight
    assert lin2._int8 is None and lin2.weight.shape == (32, 64)
    out = lin(x)  # autograd: back to a float weight
    assert out.requires_grad and lin._int8 is None


def test_int8_vocabulary_reads_rows_within_half_a_step_and_comes_back_for_training():
    torch.manual_seed(0)
    emb = layers.Embedding(300, 48)
    ids = torch.tensor([[0, 7, 299, 7]])
    ref = emb(ids).detach()
    emb.quantize_int8_()
    assert emb.weight.numel() == 0 and emb._int8[0].dtype == torch.int8
    with torch.inference_mode():
        y = emb(ids)
    step = emb._int8[1][ids]  # each row's scale: one int8 step
    assert y.dtype == torch.float32 and ((y - ref).abs() <= step / 2 + 1e-7).all()
    sd = emb.state_dict()  # the dequantized table: what a save or a copy sees
    assert sd["weight"].shape == (300, 48) and emb._int8 is None
    emb.quantize_int8_()
    out = emb(ids)  # autograd: back to a float table
    assert out.requires_grad and emb._int8 is None and emb.weight.shape == (300, 48)


def test_int8_predictor_keeps_the_sensitive_layers_in_float():
    if not hardware.int8_supported():
        pytest.skip("needs PyTorch's quantized CPU kernels (x86 with AVX2)")
    torch.manual_seed(0)
    model = build_deris(deris_tiny(vocab_size=200, max_token=20))

    class _Ids:
        max_token, vocab_size = 20, 200

    p = Predictor(model, _Ids(), precision=choose_precision("int8", "cpu"))  # type: ignore[arg-type]
    kept = [n for n, m in model.named_modules() if isinstance(m, layers.Linear) and m._int8 is None]
    quantized = [n for n, m in model.named_modules() if isinstance(m, layers.Linear) and m._int8 is not None]
    assert quantized and all(any(k in n for k in layers.INT8_KEEP_FLOAT) or
                             dict(model.named_modules())[n].out_features < 16 for n in kept)
    assert any("sampling_offsets" in n for n in kept)
    assert model.cognition.beit3.text_embed._int8 is not None  # the vocabulary too
    ids = torch.full((1, 20), 1, dtype=torch.long)
    pred = p.predict_tokens(ids, torch.zeros_like(ids), image=p.set_image(np.zeros((40, 50, 3), np.uint8)))[0]
    assert np.isfinite(pred.scores).all() and p.precision.name == "int8"


def test_int8_load_quantizes_as_it_reads_and_equals_quantizing_afterwards(tmp_path):
    """``load_predictor(dtype="int8")`` reads each quantized linear weight by itself (the float model never
    exists whole) and gives exactly the predictor that quantizing a float model gives."""
    if not hardware.int8_supported():
        pytest.skip("needs PyTorch's quantized CPU kernels (x86 with AVX2)")
    from deris_core.checkpoint import CheckpointError, save_weights
    from deris_core.weight_cache import model_from_safetensors
    from deris_core.weights import load_predictor

    if not (BUNDLED / "model.safetensors").is_file():
        pytest.skip("no bundled model in this checkout")
    p8 = load_predictor("bundled", device="cpu", dtype="int8")
    quantized = [m for m in p8.model.modules() if isinstance(m, layers.Linear) and m._int8 is not None]
    assert quantized and all(m.weight.numel() == 0 for m in quantized)
    ref = Predictor(model_from_safetensors(BUNDLED / "model.safetensors", p8.cfg), p8.tokenizer,
                    precision=choose_precision("int8", "cpu"))
    img = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    a = p8.predict("the red circle", image=p8.set_image(img))
    b = ref.predict("the red circle", image=ref.set_image(img))
    assert np.array_equal(a.scores, b.scores) and a.existence == b.existence
    # weights of another config are refused with one line naming the file
    cfg = deris_tiny(vocab_size=200, max_token=20)
    other = tmp_path / "model.safetensors"
    save_weights(build_deris(cfg), other, cfg)
    with pytest.raises(CheckpointError, match="model.safetensors does not fit"):
        model_from_safetensors(other, p8.cfg, int8=True)
    # a truncated file, and one whose header claims more bytes than there are: one line, nothing loaded
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((BUNDLED / "model.safetensors").read_bytes()[:5000])
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    for bad in (broken, lying):
        with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
            model_from_safetensors(bad, p8.cfg, int8=True)
