"""Shared test helpers: where the reference data lives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_DEVICE = os.environ.get("DERIS_TEST_DEVICE", "cpu")  # "cuda": the GPU check (deris_core/gpu_check.sh)
REFERENCE = Path(os.environ.get("DERIS_REFERENCE", ROOT.parent / "shared" / "reference"))


def _missing(message: str) -> None:
    """Skip on a user's clone without the reference data; in CI a missing check is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " -- CI must run every reference check")
    pytest.skip(message)


def require_reference(*parts: str) -> Path:
    """Path under the reference data, or skip the test with the reason (fresh clones lack it)."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        _missing(f"reference data not found: {path} (set DERIS_REFERENCE)")
    return path


def fixture_files() -> list[Path]:
    files = sorted((REFERENCE / "fixtures").glob("*.pt"))
    if not files:  # pragma: no cover - reference folder missing
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise RuntimeError(f"no golden fixtures under {REFERENCE / 'fixtures'}: CI must run them")
        pytest.skip(f"no golden fixtures under {REFERENCE / 'fixtures'}", allow_module_level=True)
    return files


BUNDLED = ROOT / "assets" / "bundled"


@pytest.fixture(scope="session")
def studio_weights(tmp_path_factory) -> tuple[Path, Path]:
    """``(weights, tokenizer)`` for app tests: the bundled model, or (before it exists) a
    freshly built small model with random weights and a tokenizer trained in the test."""
    if (BUNDLED / "model.safetensors").is_file() and (BUNDLED / "tokenizer.spm").is_file():
        return BUNDLED / "model.safetensors", BUNDLED / "tokenizer.spm"
    import torch

    from deris_core.checkpoint import save_weights
    from deris_core.config import deris_small
    from deris_core.model import build_deris
    from deris_core.tokenizer import BEiT3Tokenizer, train_sentencepiece

    out = tmp_path_factory.mktemp("studio_model")
    words = ["the red circle", "all blue squares", "the two green triangles", "the star left of the big square",
             "the largest yellow shape", "the bottom orange star", "the purple circle above the triangle"]
    tok = train_sentencepiece(words * 3, out / "tokenizer", vocab_size=60)
    cfg = deris_small(vocab_size=BEiT3Tokenizer(tok, 24).vocab_size)
    torch.manual_seed(0)
    save_weights(build_deris(cfg), out / "model.safetensors", cfg)
    return out / "model.safetensors", tok


@pytest.fixture(autouse=True, scope="session")
def _private_deris_cache(tmp_path_factory):
    """Converted checkpoints and downloaded tokenizers of the tests stay out of ~/.cache."""
    if "DERIS_CACHE" not in os.environ:
        os.environ["DERIS_CACHE"] = str(tmp_path_factory.mktemp("deris_cache"))
    yield


def use_hub(monkeypatch, endpoint: str, home: Path, *, offline: bool = False, timeout: int = 3) -> None:
    """Point ``huggingface_hub`` at ``endpoint`` with its cache under ``home``.

    ``huggingface_hub`` reads its environment once, at import, into ``huggingface_hub.constants``;
    the functions read those attributes at call time, so both the variables (for subprocesses)
    and the attributes (for this process) are set."""
    from huggingface_hub import constants

    values = {
        "HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_ETAG_TIMEOUT": str(timeout),
        "HF_HUB_DOWNLOAD_TIMEOUT": str(timeout), "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_TOKEN": "hf_stand_in_token",
        "DERIS_CACHE": str(home / "deris"),
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", timeout)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", timeout)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))


@pytest.fixture
def stand_in_hub(monkeypatch, tmp_path):
    """A running :class:`tests.hub_server.StandInHub` that ``huggingface_hub`` talks to."""
    from tests.hub_server import StandInHub

    with StandInHub() as hub:
        use_hub(monkeypatch, hub.url, tmp_path / "hf")
        monkeypatch.setenv("DERIS_TOKENIZER_URL", hub.url + "/release/beit3.spm")
        yield hub


@pytest.fixture(scope="session")
def tiny_official(tmp_path_factory):
    """A tiny model saved the way the authors publish theirs: ``{"state_dict": official names}`` in a
    ``.pth`` plus a sentencepiece tokenizer. ``.config()`` is its config; ``.state`` our tensors."""
    import types

    import torch

    from deris_core.checkpoint import to_official_state_dict
    from deris_core.config import deris_tiny
    from deris_core.model import build_deris
    from deris_core.tokenizer import BEiT3Tokenizer, train_sentencepiece

    out = tmp_path_factory.mktemp("tiny_official")
    words = ["the orange cat lying down", "a red car on the left", "the two dogs on the right", "all blue circles"]
    tok = train_sentencepiece(words * 3, out / "beit3", vocab_size=40)
    vocab = BEiT3Tokenizer(tok).vocab_size

    def config():
        return deris_tiny(vocab_size=vocab)

    torch.manual_seed(0)
    model = build_deris(config())
    pth = out / "DeRIS-tiny.pth"
    torch.save({"state_dict": to_official_state_dict(model.state_dict()), "epoch": 3}, pth)
    return types.SimpleNamespace(pth=pth, tokenizer=tok, config=config, state=model.state_dict(),
                                 pth_bytes=pth.read_bytes(), tokenizer_bytes=tok.read_bytes())


CHROMIUM = os.environ.get("DERIS_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium():
    """A headless Debian chromium driven by Playwright (skipped with the reason without it; a failure in CI)."""
    if not Path(CHROMIUM).is_file():
        _missing(f"chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """One real PostgreSQL server for the session (:mod:`tests.pg_server`: initdb in a temporary folder,
    a free port, an unprivileged user when root); skipped with the reason where it cannot start,
    a failure under CI."""
    pytest.importorskip("psycopg")
    from tests.pg_server import PgServer

    import tempfile

    root = Path(tempfile.mkdtemp(prefix="deris_pg_"))  # under /tmp: the server's user must reach it
    try:
        server = PgServer.start(root)
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        _missing(f"no PostgreSQL server for the tests: {exc}")
    yield server
    server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each test that takes it runs on both store backends."""
    return request.param


@pytest.fixture
def db_at(backend, tmp_path, request):
    """``db_at(name)``: where a test's store named ``name`` lives on this backend: ``tmp_path / name``
    for SQLite, a fresh database's URL on the session's PostgreSQL server (the same name, the same
    database, within a test)."""
    made: dict[str, str] = {}

    def at(name: str = "a.sqlite") -> str:
        if backend == "sqlite":
            return str(tmp_path / name)
        if name not in made:
            made[name] = request.getfixturevalue("pg_server").new_database()
        return made[name]

    return at
