"""Where the tokenizer of an official checkpoint comes from, in order, each candidate validated."""

from __future__ import annotations

import shutil

import pytest

from deris_core.config import PRESETS
from deris_core.tokenizer import train_sentencepiece
from deris_core.tokenizer_source import TokenizerSourceError, largest_id, resolve_tokenizer
from deris_core.weights import WeightsError, load_predictor

REPO = "Dmmm997/DeRIS"


@pytest.fixture
def lonely(tmp_path, tiny_official):
    """The tiny official checkpoint alone in a folder (no tokenizer next to it)."""
    path = tmp_path / "ckpt" / "DeRIS-tiny.pth"
    path.parent.mkdir()
    shutil.copy(tiny_official.pth, path)
    return path


@pytest.fixture
def big_vocab(tmp_path):
    """A valid sentencepiece model with more pieces than the tiny checkpoint has embedding rows."""
    words = [f"word{i} thing{i} stuff{i}" for i in range(400)]
    return train_sentencepiece(words, tmp_path / "big", vocab_size=300)


def test_explicit_then_env_then_next_to_checkpoint(lonely, tiny_official, tmp_path, monkeypatch):
    monkeypatch.delenv("DERIS_TOKENIZER", raising=False)
    rows = tiny_official.config().beit3.vocab_size
    assert resolve_tokenizer(tiny_official.tokenizer, checkpoint=lonely, vocab_rows=rows) == tiny_official.tokenizer
    other = tmp_path / "env.spm"
    shutil.copy(tiny_official.tokenizer, other)
    monkeypatch.setenv("DERIS_TOKENIZER", str(other))
    assert resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows) == other
    monkeypatch.delenv("DERIS_TOKENIZER")
    shutil.copy(tiny_official.tokenizer, lonely.with_name("beit3.spm"))
    assert resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows) == lonely.with_name("beit3.spm")


def test_explicit_path_that_is_not_usable_fails_at_once(lonely, tmp_path, big_vocab, tiny_official):
    junk = tmp_path / "junk.spm"
    junk.write_bytes(b"not a model")
    with pytest.raises(TokenizerSourceError, match="junk.spm: not a sentencepiece model"):
        resolve_tokenizer(junk, checkpoint=lonely)
    rows = tiny_official.config().beit3.vocab_size
    with pytest.raises(TokenizerSourceError, match=f"largest id {largest_id(big_vocab)} does not fit .* {rows} "):
        resolve_tokenizer(big_vocab, checkpoint=lonely, vocab_rows=rows)


def test_hub_then_release_downloaded_once(lonely, tiny_official, stand_in_hub, monkeypatch):
    rows = tiny_official.config().beit3.vocab_size
    stand_in_hub.add(REPO, {"beit3.spm": tiny_official.tokenizer_bytes})
    got = resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows, hub_repo=REPO)
    assert got.read_bytes() == tiny_official.tokenizer_bytes and ("GET", f"/{REPO}/resolve/main/beit3.spm") in stand_in_hub.requests
    # the repository and file name are configurable
    stand_in_hub.add("someone/tokenizers", {"xlmr.spm": tiny_official.tokenizer_bytes})
    monkeypatch.setenv("DERIS_HF_TOKENIZER_REPO", "someone/tokenizers")
    monkeypatch.setenv("DERIS_HF_TOKENIZER_FILE", "xlmr.spm")
    assert resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows, hub_repo=REPO).name == "xlmr.spm"
    monkeypatch.delenv("DERIS_HF_TOKENIZER_REPO")
    monkeypatch.delenv("DERIS_HF_TOKENIZER_FILE")

    # not on the Hub: the BEiT-3 release, fetched once into the cache
    stand_in_hub.repos[REPO].files.pop("beit3.spm")
    stand_in_hub.release["beit3.spm"] = tiny_official.tokenizer_bytes
    first = resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows, hub_repo=REPO)
    assert first.read_bytes() == tiny_official.tokenizer_bytes
    stand_in_hub.requests.clear()
    assert resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows, hub_repo=REPO) == first
    assert ("GET", "/release/beit3.spm") not in stand_in_hub.requests


def test_failure_lists_every_place_and_how_to_fix(lonely, tiny_official, stand_in_hub, big_vocab):
    rows = tiny_official.config().beit3.vocab_size
    shutil.copy(big_vocab, lonely.with_name("tokenizer.spm"))  # present but too large: skipped with the reason
    stand_in_hub.add(REPO, {"README.md": b"# weights only\n"})
    with pytest.raises(TokenizerSourceError) as err:
        resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows, hub_repo=REPO)
    msg = str(err.value)
    assert "\n" not in msg
    assert "1) beit3.spm next to the checkpoint (no such file)" in msg
    assert "2) tokenizer.spm next to the checkpoint (its largest id" in msg
    assert f"3) Hub {REPO}/beit3.spm (the repository has no such file (HTTP 404))" in msg
    assert "4) " + stand_in_hub.url + "/release/beit3.spm" in msg
    assert "--tokenizer PATH" in msg and "DERIS_TOKENIZER" in msg and "github.com" in msg
    assert str(lonely.parent) not in msg  # file names, not server paths


def test_load_predictor_reports_the_places(lonely, tiny_official, stand_in_hub, monkeypatch):
    monkeypatch.setitem(PRESETS, "deris-tiny", tiny_official.config)
    with pytest.raises(WeightsError, match=r"no usable BEiT-3 tokenizer for official checkpoint DeRIS-tiny.pth; tried: 1\)"):
        load_predictor(lonely, device="cpu", config="deris-tiny")
    stand_in_hub.release["beit3.spm"] = tiny_official.tokenizer_bytes
    p = load_predictor(lonely, device="cpu", config="deris-tiny")
    assert p.tokenizer.vocab_size == tiny_official.config().beit3.vocab_size


def test_control_symbols_are_text(tiny_official):
    """``<s>``, ``<pad>``, ``</s>``, ``<unk>``, ``<mask>`` typed in an expression never become control ids."""
    from deris_core.tokenizer import BOS, EOS, PAD, BEiT3Tokenizer

    tok = BEiT3Tokenizer(tiny_official.tokenizer, max_token=50)
    mask_id = tok.sp.GetPieceSize() + 1  # where XLM-R puts <mask>
    for symbol in ("<s>", "<pad>", "</s>", "<unk>", "<mask>"):
        enc = tok.encode(f"the {symbol} cat")
        inner = enc.ids[1 : enc.num_tokens - 1].tolist()
        assert enc.ids[0] == BOS and enc.ids[enc.num_tokens - 1] == EOS
        assert not {BOS, EOS, PAD, mask_id} & set(inner), symbol
        assert len(inner) > len(tok.piece_ids("the cat")), symbol  # the symbol's characters are kept as pieces


def _no_partial_files(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".part")] if folder.exists() else True


def test_a_trickling_release_is_given_up_on_at_the_deadline(lonely, tiny_official, stand_in_hub, monkeypatch):
    import os
    import time
    from pathlib import Path

    rows = tiny_official.config().beit3.vocab_size
    stand_in_hub.release["beit3.spm"] = tiny_official.tokenizer_bytes
    stand_in_hub.trickle.add("beit3.spm")  # one byte every half second: it would take hours
    monkeypatch.setenv("DERIS_TOKENIZER_DEADLINE", "2")
    t0 = time.monotonic()
    with pytest.raises(TokenizerSourceError, match="longer than the 2 s allowed") as err:
        resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows)
    assert time.monotonic() - t0 < 6 and "\n" not in str(err.value)
    folder = Path(os.environ["DERIS_CACHE"]) / "tokenizer"
    assert not (folder / "beit3.spm").exists()
    deadline = time.monotonic() + 5
    while not _no_partial_files(folder) and time.monotonic() < deadline:  # the given-up download cleans after itself
        time.sleep(0.1)
    assert _no_partial_files(folder)


def test_a_trickling_hub_falls_through_to_the_release(lonely, tiny_official, stand_in_hub, monkeypatch):
    import time

    rows = tiny_official.config().beit3.vocab_size
    stand_in_hub.add(REPO, {"beit3.spm": tiny_official.tokenizer_bytes})
    stand_in_hub.trickle.add("beit3.spm")
    stand_in_hub.release["tok.spm"] = tiny_official.tokenizer_bytes
    monkeypatch.setenv("DERIS_TOKENIZER_URL", stand_in_hub.url + "/release/tok.spm")
    monkeypatch.setenv("DERIS_TOKENIZER_DEADLINE", "2")
    t0 = time.monotonic()
    got = resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows, hub_repo=REPO)
    assert got.name == "tok.spm" and got.read_bytes() == tiny_official.tokenizer_bytes
    assert time.monotonic() - t0 < 8


@pytest.mark.parametrize("announced", [True, False])
def test_a_download_over_the_size_cap_is_refused_while_streaming(lonely, tiny_official, stand_in_hub, monkeypatch,
                                                                 announced):
    import os
    from pathlib import Path

    rows = tiny_official.config().beit3.vocab_size
    stand_in_hub.release["beit3.spm"] = b"\0" * (3 << 20)  # 3 MiB
    if not announced:
        stand_in_hub.no_length.add("beit3.spm")
    monkeypatch.setenv("DERIS_TOKENIZER_MAX_BYTES", str(1 << 20))
    written: list[int] = []

    class Counting:  # how much was ever written to the partial file
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            written.append(len(data))
            return self.fh.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr("deris_core.hub.open", lambda *a, **k: Counting(open(*a, **k)), raising=False)
    with pytest.raises(TokenizerSourceError, match=f"more than the {1 << 20} bytes allowed"):
        resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows)
    assert sum(written) <= 1 << 20
    folder = Path(os.environ["DERIS_CACHE"]) / "tokenizer"
    assert not (folder / "beit3.spm").exists() and _no_partial_files(folder)


def test_a_hub_file_over_the_size_cap_is_refused_before_downloading(lonely, tiny_official, stand_in_hub, monkeypatch):
    rows = tiny_official.config().beit3.vocab_size
    stand_in_hub.add(REPO, {"beit3.spm": b"\0" * (2 << 20)})
    monkeypatch.setenv("DERIS_TOKENIZER_MAX_BYTES", str(1 << 20))
    with pytest.raises(TokenizerSourceError, match=f"Hub {REPO}/beit3.spm \\(it is {2 << 20} bytes, more than the"):
        resolve_tokenizer(None, checkpoint=lonely, vocab_rows=rows, hub_repo=REPO)
    assert ("GET", f"/{REPO}/resolve/main/beit3.spm") not in stand_in_hub.requests


@pytest.mark.parametrize("name,value", [("DERIS_TOKENIZER_DEADLINE", "soon"), ("DERIS_TOKENIZER_MAX_BYTES", "1.5MB")])
def test_bad_limits_are_named(lonely, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(TokenizerSourceError, match="DERIS_TOKENIZER_DEADLINE must be seconds"):
        resolve_tokenizer(None, checkpoint=lonely, hub_repo=REPO)
