"""Official key mapping against the manifests, safe loading, and our safetensors format."""

from __future__ import annotations

import json
import pickle
import re

import pytest
import torch

from deris_core.checkpoint import (
    DROPPED_KEYS,
    CheckpointError,
    config_from_safetensors,
    convert_official_state_dict,
    load_official_checkpoint,
    load_weights,
    official_key_to_ours,
    safe_torch_load,
    save_weights,
)
from deris_core.config import OFFICIAL_NAMES, deris_tiny, get_config
from deris_core.model import build_deris

from .conftest import require_reference


def _manifest(name: str) -> dict:
    return json.loads(require_reference("manifests", f"{OFFICIAL_NAMES[name]}.json").read_text())


@pytest.mark.parametrize("name", sorted(OFFICIAL_NAMES))
def test_manifest_keys_map_one_to_one(name):
    """Every official key maps to one of ours with the same shape, or is explicitly dropped."""
    manifest = _manifest(name)
    model = build_deris(get_config(name), device="meta")  # no memory, no download
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sources: dict[str, str] = {}
    dropped = []
    for key, info in manifest["tensors"].items():
        target = official_key_to_ours(key)
        if target is None:
            dropped.append(key)
            continue
        assert target in ours, f"{key} -> {target} is not a tensor of ours"
        assert ours[target] == tuple(info["shape"]), f"{key}: {info['shape']} vs ours {ours[target]}"
        assert target not in sources, f"{key} and {sources[target]} both map to {target}"
        sources[target] = key
    assert set(sources) == set(ours), f"tensors without official source: {sorted(set(ours) - set(sources))[:5]}"
    assert "head.criterion.empty_weight" in dropped
    # Parameter counts reconcile: official parameters = ours + dropped parameters (buffers excluded).
    buffers = {k for k in dropped if k.endswith("relative_position_index") or k == "head.criterion.empty_weight"}
    dropped_params = sum(torch.Size(manifest["tensors"][k]["shape"]).numel() for k in dropped if k not in buffers)
    assert sum(p.numel() for p in model.parameters()) + dropped_params == manifest["num_params"]


def test_every_drop_rule_is_needed():
    """Each documented drop rule matches official keys; none is dead."""
    keys = [k for name in OFFICIAL_NAMES for k in _manifest(name)["tensors"]]
    for pattern, why in DROPPED_KEYS:
        assert any(re.search(pattern, k) for k in keys), f"drop rule {pattern!r} ({why}) matches no official key"


def _tiny_official_state(model) -> dict[str, torch.Tensor]:
    """Our tiny model's weights under official names (inverse of the mapping, found by search)."""
    num = re.compile(r"(?<=\.)\d+(?=\.)")
    manifest = _manifest("deris-b-grefcoco")
    templates: dict[str, list[tuple[list[str], list[str]]]] = {}
    for key in manifest["tensors"]:
        target = official_key_to_ours(key)
        if target is not None:
            templates.setdefault(num.sub("#", target), []).append((num.split(key), num.findall(key)))
    out = {}
    for k, v in model.state_dict().items():
        idx = num.findall(k)
        for parts, consts in templates[num.sub("#", k)]:
            fill = idx + consts[len(idx) :]
            name = parts[0] + "".join(f + p for f, p in zip(fill, parts[1:]))
            if official_key_to_ours(name) == k:
                out[name] = v.clone()
                break
        else:  # pragma: no cover
            raise AssertionError(f"no official name for {k}")
    return out


def test_official_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = deris_tiny()
    model = build_deris(cfg)
    official = {"module." + k: v for k, v in _tiny_official_state(model).items()}
    official["module.head.criterion.empty_weight"] = torch.tensor([1.0, 0.1])
    ckpt = {
        "state_dict": official,
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"last_epoch": 3},
        "epoch": 3,
        "best_giou": torch.tensor(0.5).numpy().astype("float64")[()],  # numpy scalar, as training scripts store
    }
    path = tmp_path / "official.pth"
    torch.save(ckpt, path)
    fresh = build_deris(cfg)
    load_official_checkpoint(fresh, path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_wrong_checkpoint_names_offenders(tmp_path):
    torch.manual_seed(0)
    small = build_deris(deris_tiny(num_queries=6))
    official = _tiny_official_state(small)
    path = tmp_path / "other.pth"
    torch.save({"state_dict": official}, path)
    other = build_deris(deris_tiny(num_queries=4))
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(other, path)
    msg = str(err.value)
    assert "deris-tiny" in msg and "shape mismatches" in msg and "init_query" in msg


def test_missing_keys_are_reported(tmp_path):
    model = build_deris(deris_tiny())
    official = _tiny_official_state(model)
    official.pop(next(k for k in official if "Q2TCA" in k))
    path = tmp_path / "partial.pth"
    torch.save(official, path)
    with pytest.raises(CheckpointError, match="1 missing keys: perception.decoder.loopback"):
        load_official_checkpoint(build_deris(deris_tiny()), path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot load .* safely"):
        safe_torch_load(path)
    assert "pwned" not in capsys.readouterr().out


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError):
        load_official_checkpoint(build_deris(deris_tiny()), path)
    with pytest.raises(CheckpointError, match="not found"):
        load_official_checkpoint(build_deris(deris_tiny()), tmp_path / "nope.pth")


def test_safetensors_roundtrip(tmp_path):
    torch.manual_seed(1)
    cfg = deris_tiny()
    model = build_deris(cfg)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, cfg)
    assert config_from_safetensors(path) == cfg
    fresh = build_deris(cfg)
    load_weights(fresh, path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k])
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_weights(fresh, tmp_path / "bad.safetensors")


def test_failed_save_keeps_previous_weights(tmp_path, monkeypatch):
    """A crash while writing leaves the previous file intact and no temporary file behind."""
    import safetensors.torch

    cfg = deris_tiny()
    model = build_deris(cfg)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, cfg)
    before = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_weights(model, path, cfg)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_convert_rejects_collisions():
    with pytest.raises(CheckpointError, match="two official keys"):
        convert_official_state_dict({"understanding_branch.vis_embed.weight": torch.zeros(1), "module.understanding_branch.vis_embed.weight": torch.zeros(1)})


def test_no_compiled_or_forbidden_dependencies():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    for path in list((root / "deris_core").rglob("*.py")) + list((root / "app").rglob("*.py")):
        text = path.read_text()
        for bad in ("import mmcv", "import mmdet", "detectron2", "fvcore", ".cuda()"):
            assert bad not in text, f"{bad!r} in {path}"
