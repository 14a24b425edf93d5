"""What the machine offers, asked once, and the precision that follows from it.

CPUs differ in what they compute fast: bfloat16 arithmetic needs AVX-512 BF16 or AMX on x86
(oneDNN packs bf16 linear weights only with AVX-512 BW/VL/DQ or AVX-NE-CONVERT and refuses
elsewhere), or the BF16 extension on ARM; an AVX2-only CPU has no bf16 instructions at all,
so bf16 there is emulated and slower than fp32. :func:`choose_precision` turns a request
(``"auto"``, ``"fp32"``, ``"bf16"``, ``"int8"``) and a device into the :class:`Precision` that will run,
with the reason, and a one-line note when the request cannot be honoured as asked. Nothing
here raises on an unusual machine: unknown answers count as "not supported".

``ONEDNN_MAX_CPU_ISA`` (oneDNN), ``ATEN_CPU_CAPABILITY`` (PyTorch) and ``FBGEMM_ENABLE_INSTRUCTIONS``
(int8) are honoured, so an AVX-512 machine can rehearse an AVX2-only one (docs/precision-and-hardware.md).
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from functools import lru_cache

import torch

from . import env
from .dtypes import DTYPE_CHOICES, DTYPE_HELP  # noqa: F401 - the command lines import them from here too
from .errors import DerisError

log = logging.getLogger(__name__)

_ALIASES = {"auto": "auto", "fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "int8": "int8"}

# oneDNN's ISA names in increasing order; bf16 arithmetic starts at AVX512_CORE_BF16
# (AVX2_VNNI_2 adds bf16 conversions, not bf16 dot products).
_ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
                "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
_NOTABLE_FLAGS = ("avx2", "fma3", "avx512_f", "avx512_bw", "avx512_vl", "avx512_dq", "avx512_vnni", "avx512_bf16",
                  "avx512_fp16", "avx_vnni", "avx_ne_convert", "amx_tile", "amx_bf16", "amx_int8")


class PrecisionError(DerisError, ValueError):
    """A precision request that is not one of :data:`DTYPE_CHOICES`."""


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as PyTorch and oneDNN see it (``flags``: the notable ones that are present)."""

    name: str
    arch: str
    isa: str  # PyTorch's vectorised kernels: "AVX512", "AVX2", "DEFAULT", "SVE256", ...
    flags: tuple[str, ...] = ()
    onednn_bf16: bool = False  # oneDNN accepts bf16 (packing bf16 linear weights works)
    fast_bf16: bool = False  # the CPU computes in bf16 natively (AVX-512 BF16, AMX, ARM BF16)
    onednn_max_isa: str | None = None  # ONEDNN_MAX_CPU_ISA when set

    @property
    def kind(self) -> str:
        """The kind of CPU for speed references: ``avx512``, ``avx2`` or the architecture."""
        if self.arch in ("x86_64", "AMD64", "i386", "x86"):
            return "avx512" if self.isa == "AVX512" else "avx2" if self.isa == "AVX2" else "x86"
        return self.arch

    def summary(self) -> str:
        """One line: model, architecture, kernels and the notable flags."""
        flags = " ".join(self.flags) or "none of note"
        cap = f", ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}" if self.onednn_max_isa else ""
        return f"{self.name} ({self.arch}, PyTorch kernels {self.isa}{cap}; flags: {flags})"


def _onednn_isa_allows(isa: str, needed: str) -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA=isa`` still lets oneDNN use ``needed``."""
    isa = isa.strip().upper()
    if isa in ("", "ALL", "DEFAULT"):
        return True
    if isa not in _ONEDNN_ISAS:
        return True  # unknown names are ignored by oneDNN too
    return _ONEDNN_ISAS.index(isa) >= _ONEDNN_ISAS.index(needed)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _onednn_bf16_supported() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """Ask PyTorch (cpuinfo) and oneDNN once what this CPU offers."""
    try:
        caps = dict(torch._C._cpu._get_cpu_capability())
    except (AttributeError, RuntimeError):
        caps = {}
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        isa = "DEFAULT"
    arch = str(caps.get("architecture") or platform.machine())
    flags = tuple(f for f in _NOTABLE_FLAGS if caps.get(f))
    max_isa = env.filled("ONEDNN_MAX_CPU_ISA")
    onednn_bf16 = _onednn_bf16_supported()
    if arch in ("x86_64", "AMD64", "x86", "i386"):
        native = bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
        fast = onednn_bf16 and native and isa == "AVX512" and _onednn_isa_allows(max_isa or "", "AVX512_CORE_BF16")
    else:  # ARM: oneDNN's bf16 check is the BF16 extension itself
        fast = onednn_bf16
    name = _cpu_name()  # the full model name; cpuinfo's own is shortened ("AMD EPYC")
    if name == "unknown CPU" and caps.get("cpu_name"):
        name = str(caps["cpu_name"])
    return CpuInfo(name=name, arch=arch, isa=isa, flags=flags, onednn_bf16=onednn_bf16, fast_bf16=fast,
                   onednn_max_isa=max_isa)


def packable_dtypes() -> tuple[torch.dtype, ...]:
    """Dtypes whose linear weights oneDNN can pack on this CPU (bf16 only where it accepts bf16)."""
    return (torch.float32, torch.bfloat16) if cpu_info().onednn_bf16 else (torch.float32,)


def int8_supported() -> bool:
    """PyTorch's quantized CPU kernels for dynamic int8 linears (FBGEMM / oneDNN on x86 with AVX2)."""
    info = cpu_info()
    if info.arch not in ("x86_64", "AMD64") or "avx2" not in info.flags:
        return False  # ARM's QNNPACK path is untested here
    try:
        engines = torch.backends.quantized.supported_engines
    except (AttributeError, RuntimeError):
        return False
    return hasattr(torch.ops.quantized, "linear_dynamic") and bool({"x86", "fbgemm"} & set(engines))


def mps_available() -> bool:
    """Apple-silicon GPU through PyTorch's MPS backend."""
    try:
        return bool(torch.backends.mps.is_available())
    except (AttributeError, RuntimeError):
        return False


def cuda_bf16_supported() -> bool:
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except (AssertionError, RuntimeError):
        return False


@dataclass(frozen=True)
class Precision:
    """What runs: the network's dtype, the kernels, why; ``note`` when the request was changed."""

    requested: str
    dtype: torch.dtype
    kernels: str
    reason: str
    note: str | None = None
    device: str = "cpu"
    int8: bool = False  # linear weights in int8 (dynamic quantization), the rest in ``dtype`` (fp32)

    @property
    def name(self) -> str:
        return "int8" if self.int8 else "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def describe(self) -> str:
        """One line for model lines and logs: ``bf16 (oneDNN packed bf16, AVX-512 BF16)``."""
        return f"{self.name} ({self.kernels})"

    def as_dict(self) -> dict:
        return {"requested": self.requested, "dtype": self.name, "kernels": self.kernels, "reason": self.reason,
                "note": self.note, "device": self.device}


def normalize_request(requested: str | None) -> str:
    """``auto``/``fp32``/``bf16``/``int8`` (and the long names); ``None`` reads ``DERIS_DTYPE`` (default auto)."""
    if requested is None:
        requested = env.get("DERIS_DTYPE")
    key = str(requested).strip().lower()
    if key not in _ALIASES:
        raise PrecisionError(f"dtype must be one of {', '.join(DTYPE_CHOICES)} (or float32/bfloat16), got {requested!r}")
    return _ALIASES[key]


def onednn_prepack_enabled() -> bool:
    """oneDNN linear packing is available and not switched off (``DERIS_ONEDNN_PREPACK=0``: plain F.linear);
    :mod:`deris_core.model.layers` decides with it at import whether its linears pack."""
    if env.get("DERIS_ONEDNN_PREPACK") == "0":
        return False
    return hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()


def _int8_precision(req: str, info: CpuInfo, why: str) -> Precision:
    kernels = f"int8 dynamic-quantized linears ({torch.backends.quantized.engine}, {info.isa}), the rest fp32"
    return Precision(req, torch.float32, kernels, why, device="cpu", int8=True)


def _cpu_kernels(dtype: str, info: CpuInfo) -> str:
    packed = onednn_prepack_enabled() and (dtype == "fp32" or info.onednn_bf16)
    if dtype == "bf16":
        if info.fast_bf16:
            what = "AMX" if "amx_bf16" in info.flags else "AVX-512 BF16" if "avx512_bf16" in info.flags else info.isa
        else:
            what = f"{info.isa}, bf16 emulated"
        return f"oneDNN packed bf16 linears, {what}" if packed else f"PyTorch bf16 kernels, {what}"
    return f"oneDNN packed fp32 linears, {info.isa}" if packed else f"PyTorch fp32 kernels, {info.isa}"


def choose_precision(requested: str | None, device: torch.device | str = "cpu") -> Precision:
    """The precision to run for ``requested`` on ``device`` (see the module docstring).

    * ``fp32``: always; it matches the official outputs to 1e-4.
    * ``bf16``: where the device computes bf16 fast (CUDA with bf16, a CPU with AVX-512 BF16 /
      AMX / ARM BF16); elsewhere fp32 with a note (a CPU without bf16 instructions emulates it,
      slower than fp32; MPS bf16 is untested).
    * ``int8``: linear weights in int8 with float32 activations quantized per call, on x86 CPUs
      with PyTorch's quantized kernels; elsewhere the device's ``auto`` choice with a note.
    * ``auto``: bf16 where it is fast (agreement with fp32 measured, docs/precision-and-hardware.md), else int8 on x86
      CPUs with the quantized kernels (faster than fp32 there, agreement measured), else fp32.
    """
    req = normalize_request(requested)
    dev = torch.device(device)
    if req == "int8" and (dev.type != "cpu" or not int8_supported()):
        where = "an x86 CPU with AVX2 and PyTorch's quantized kernels" if dev.type == "cpu" else "the CPU"
        fallback = choose_precision("auto", dev)
        note = f"int8 needs {where}; running {fallback.name}"
        return Precision(req, fallback.dtype, fallback.kernels, fallback.reason, note=note, device=fallback.device)
    if dev.type == "cuda":
        if req == "fp32":
            return Precision(req, torch.float32, "CUDA fp32", "asked for fp32", device=str(dev))
        if cuda_bf16_supported():
            why = "asked for bf16" if req == "bf16" else "the GPU computes bf16 natively"
            return Precision(req, torch.bfloat16, "CUDA bf16", why, device=str(dev))
        note = "bf16 needs a GPU with bf16 support (compute capability 8.0 or newer); running fp32" if req == "bf16" else None
        return Precision(req, torch.float32, "CUDA fp32", "this GPU has no fast bf16", note=note, device=str(dev))
    if dev.type == "mps":
        note = "bf16 on Apple GPUs is untested here; running fp32" if req == "bf16" else None
        return Precision(req, torch.float32, "MPS fp32", "MPS runs fp32 (bf16 untested)", note=note, device=str(dev))
    if dev.type != "cpu":
        note = f"bf16 is only supported on cpu and cuda here; running fp32 on {dev.type}" if req == "bf16" else None
        return Precision(req, torch.float32, f"{dev.type} fp32", "fp32 on this device", note=note, device=str(dev))
    info = cpu_info()
    if req == "fp32":
        return Precision(req, torch.float32, _cpu_kernels("fp32", info), "asked for fp32", device="cpu")
    if req == "int8":
        return _int8_precision(req, info, "asked for int8")
    if info.fast_bf16:
        why = "asked for bf16" if req == "bf16" else "this CPU computes bf16 natively; agreement with fp32 measured (docs/precision-and-hardware.md)"
        return Precision(req, torch.bfloat16, _cpu_kernels("bf16", info), why, device="cpu")
    no_bf16 = "this CPU has no bf16 instructions (AVX-512 BF16, AMX or ARM BF16): bf16 would be emulated, slower than fp32"
    if req == "auto" and int8_supported():
        return _int8_precision(req, info, no_bf16 + "; int8 linears are faster and their agreement is measured (docs/precision-and-hardware.md)")
    note = "bf16 needs a CPU with AVX-512 BF16 or AMX (or ARM BF16); running fp32" if req == "bf16" else None
    return Precision(req, torch.float32, _cpu_kernels("fp32", info), no_bf16, note=note, device="cpu")


def given_precision(dtype: torch.dtype, device: torch.device | str) -> Precision:
    """The :class:`Precision` of a dtype chosen by the caller (no fallback; kernels as they will run)."""
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    dev = torch.device(device)
    if dev.type == "cpu":
        kernels = _cpu_kernels(name, cpu_info())
    else:
        kernels = f"{dev.type.upper() if dev.type in ('cuda', 'mps') else dev.type} {name}"
    return Precision(name, dtype, kernels, "set by the caller", device=str(dev))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU; an explicit device must exist."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            _note_mps()
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "mps":
        if not mps_available():
            raise RuntimeError("device 'mps' was requested but PyTorch's MPS backend is not available on this machine")
        _note_mps()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available")
    return dev


def _note_mps() -> None:
    """MPS lacks some operations; with ``PYTORCH_ENABLE_MPS_FALLBACK=1`` (set by ``deris_core`` on
    macOS when it is imported before torch) they run on the CPU instead of failing."""
    if env.get("PYTORCH_ENABLE_MPS_FALLBACK") == "1":
        log.info("running on Apple's MPS (untested on real hardware); operations MPS lacks run on the CPU")
    else:
        log.warning("running on Apple's MPS (untested on real hardware); if an operation is missing, start with "
                    "PYTORCH_ENABLE_MPS_FALLBACK=1 so that it runs on the CPU")
