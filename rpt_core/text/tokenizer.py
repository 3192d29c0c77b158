"""The tokenizer layer: a thin, exact wrapper around a byte-level BPE ``tokenizers.Tokenizer``.

RPT rewards a prediction by comparing *bytes* at *token boundaries*, so the one thing this module must
never get wrong is the byte content of each token. ``encode_with_spans`` returns, for every token of the
normalized text, its byte span, and checks that the token bytes concatenate back to the text exactly
(raising ``TokenSpanMismatch`` otherwise). Fingerprints let shards, checkpoints and runs prove they use
the same tokenizer (``fingerprint``) or at least the same byte boundaries (``base_vocab_fingerprint``).

A tokenizer also carries what its directory says about chat (``rpt_core.text.chat_template``): the model's
own chat template and named special tokens from ``tokenizer_config.json`` / ``chat_template.jinja`` beside
``tokenizer.json``. ``Tokenizer.chat`` renders conversations with it (Qwen3's format when there is none),
and ``stop_ids`` adds the declared ``eos_token`` to the usual end-of-turn tokens.

No ``transformers`` here: the file is read with the ``tokenizers`` library and, for a hub id, fetched
with ``huggingface_hub.hf_hub_download`` only when no local path of that name exists.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path

import tokenizers

from rpt_core.runtime.errors import RptError, first_line
from rpt_core.runtime.files import sha256_bytes, write_json_atomic, write_text_atomic
from rpt_core.runtime.hub import fetch_error, is_hub_id
from rpt_core.text.chat_template import SIDECAR_FILES, TOKENIZER_CONFIG_FILE, Chat, ChatSpec, read_chat_spec

TOKENIZER_FILE = "tokenizer.json"
EOS_CANDIDATES = ("<|im_end|>", "<|endoftext|>")
PAD_TOKEN = "<|endoftext|>"

# "name" or "org/name" as the hub spells repo ids; anything else (two slashes, ./x, *.json) is a path.

Span = tuple[int, int]


class TokenSpanMismatch(RuntimeError):
    """Token bytes did not concatenate back to the encoded text: a bug or an unsuitable tokenizer."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character alphabet used by byte-level BPE vocabularies.

    Printable latin-1 bytes map to themselves; the 68 others (controls, space, NBSP, soft hyphen) map to
    U+0100 onwards in byte order, so every byte has a visible, reversible stand-in.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@functools.lru_cache(maxsize=1)
def _unicode_to_byte_table() -> dict[int, int | str]:
    """``str.translate`` table turning byte-level characters back into latin-1 characters (one per byte).

    Latin-1 characters that are *not* in the alphabet map to U+FFFF so that ``encode('latin-1')`` fails on
    them instead of silently passing a non-byte-level token through.
    """
    table: dict[int, int | str] = {ord(ch): b for b, ch in bytes_to_unicode().items()}
    for code in range(256):
        table.setdefault(code, "\uffff")
    return table


def byte_level_token_bytes(token: str) -> bytes:
    """Exact bytes of a byte-level BPE vocabulary entry (e.g. ``"Ġthe"`` -> ``b" the"``)."""
    try:
        return token.translate(_unicode_to_byte_table()).encode("latin-1")
    except UnicodeEncodeError:
        raise RptError(
            f"token {token!r} is not a byte-level BPE token (is this a byte-level tokenizer?)"
        ) from None


def _download_from_hub(repo_id: str) -> Path:
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    try:
        file = Path(huggingface_hub.hf_hub_download(repo_id, TOKENIZER_FILE))
    except (OSError, ValueError, EntryNotFoundError) as exc:
        # OSError covers offline mode, not-cached, missing repo/file and HTTP errors; ValueError bad ids.
        raise fetch_error(f"tokenizer, no local {TOKENIZER_FILE}", repo_id, exc) from None
    for name in SIDECAR_FILES:  # the chat template and special tokens, where the repo has them
        try:
            huggingface_hub.hf_hub_download(repo_id, name)
        except (OSError, ValueError, EntryNotFoundError):
            pass
    return file


def resolve_tokenizer_file(path_or_id: str | Path) -> Path:
    """Local ``tokenizer.json`` for a file, a directory holding one, or (if no such path exists) a hub id."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        file = path / TOKENIZER_FILE
        if not file.is_file():
            raise RptError(f"directory {path} has no {TOKENIZER_FILE}")
        return file
    if path.is_file():
        return path
    if is_hub_id(path_or_id):
        return _download_from_hub(path_or_id)
    raise RptError(f"tokenizer {str(path_or_id)!r}: no such file or directory")


class Tokenizer:
    """A byte-level BPE tokenizer with exact token bytes, byte spans and fingerprints.

    Build it with ``Tokenizer.load(path_or_id)`` or ``Tokenizer(tokenizers.Tokenizer)``.
    """

    def __init__(
        self, tok: tokenizers.Tokenizer, source: str = "<memory>", chat_spec: ChatSpec | None = None
    ) -> None:
        self._tok = tok
        self.source = source
        self.chat_spec = chat_spec or ChatSpec()
        added = tok.get_added_tokens_decoder()  # {id: AddedToken}
        self._added_ids = frozenset(added)
        self._special_ids = frozenset(i for i, t in added.items() if t.special)
        self._vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self._base_vocab_size = tok.get_vocab_size(with_added_tokens=False)
        base_vocab = tok.get_vocab(with_added_tokens=False)
        size = max([*base_vocab.values(), *added, -1]) + 1
        table: list[bytes | None] = [None] * size
        for token, i in base_vocab.items():
            if i not in added:  # an added token that is also a vocabulary entry is spelled literally
                table[i] = byte_level_token_bytes(token)
        for i, t in added.items():
            table[i] = t.content.encode("utf-8")  # an added token is its literal text
        missing = [i for i, b in enumerate(table) if b is None]
        if missing:
            raise RptError(f"tokenizer {source}: ids {missing[:5]} have no token (vocabulary has holes)")
        self._bytes: list[bytes] = table  # type: ignore[assignment]

    @classmethod
    def load(cls, path_or_id: str | Path) -> Tokenizer:
        file = resolve_tokenizer_file(path_or_id)
        try:
            tok = tokenizers.Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises bare Exception for unreadable / invalid files
            raise RptError(f"cannot read tokenizer {file}: {first_line(exc)}") from None
        return cls(tok, source=str(file), chat_spec=read_chat_spec(file.parent))

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` atomically (and, when it has a chat template or named special
        tokens, a ``tokenizer_config.json`` transformers can read); returns the tokenizer.json path."""
        file = Path(directory) / TOKENIZER_FILE
        write_text_atomic(file, self._tok.to_str(pretty=True))
        spec = self.chat_spec
        if spec.template is not None or spec.special_tokens:
            config = {"tokenizer_class": "PreTrainedTokenizerFast", **spec.special_tokens}
            if spec.template is not None:
                config["chat_template"] = spec.template
            write_json_atomic(Path(directory) / TOKENIZER_CONFIG_FILE, config)
        return file

    @functools.cached_property
    def chat(self) -> Chat:
        """The model's chat format: its own template if it ships one, else Qwen3's built-in renderer."""
        return self.chat_spec.renderer()

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size})"

    # ---- text <-> ids -------------------------------------------------------------------------------

    @property
    def raw(self) -> tokenizers.Tokenizer:
        """The wrapped ``tokenizers.Tokenizer`` (shared, do not mutate)."""
        return self._tok

    def normalize(self, text: str) -> str:
        norm = self._tok.normalizer
        return norm.normalize_str(text) if norm is not None else text

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no BOS/EOS or template tokens are added (added tokens in the text match)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    @property
    def token_bytes_table(self) -> list[bytes]:
        """``table[id]`` = exact bytes of token ``id`` (shared list, do not mutate)."""
        return self._bytes

    def encode_with_spans(self, text: str) -> tuple[list[int], list[Span]]:
        """Ids of ``normalize(text)`` and each token's ``(start, end)`` byte span in its UTF-8 encoding."""
        normalized = self.normalize(text)
        ids = self._tok.encode(normalized, add_special_tokens=False).ids
        return ids, self._spans(ids, normalized)

    def encode_batch_with_spans(self, texts: Sequence[str]) -> list[tuple[list[int], list[Span]]]:
        """``encode_with_spans`` for many texts at once (parallel encoding in the Rust library)."""
        normalized = [self.normalize(t) for t in texts]
        encodings = self._tok.encode_batch_fast(normalized, add_special_tokens=False)
        return [(e.ids, self._spans(e.ids, t)) for e, t in zip(encodings, normalized, strict=True)]

    def _spans(self, ids: list[int], normalized: str) -> list[Span]:
        try:
            data = normalized.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RptError(f"text is not valid Unicode ({exc.reason} at character {exc.start})") from None
        table = self._bytes
        pieces = [table[i] for i in ids]
        if b"".join(pieces) != data:
            raise TokenSpanMismatch(_describe_mismatch(pieces, data, self.source))
        ends = list(accumulate(map(len, pieces)))
        return list(zip([0, *ends[:-1]], ends, strict=True))

    # ---- vocabulary facts ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of tokens including added tokens (Qwen3: 151,669)."""
        return self._vocab_size

    @property
    def base_vocab_size(self) -> int:
        """Number of tokens of the BPE model alone (Qwen3: 151,643)."""
        return self._base_vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def eos_id(self) -> int:
        """``<|im_end|>`` (end of a chat turn) if present, else ``<|endoftext|>``, else the declared
        ``eos_token`` (a Llama 3 tokenizer has neither Qwen token: ``<|eot_id|>``)."""
        ids = self.stop_ids  # in that order
        if not ids:
            names = ", ".join([*EOS_CANDIDATES, "a declared eos_token"])
            raise RptError(f"tokenizer {self.source} has none of {names} (no EOS token)")
        return ids[0]

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end a generation: ``<|im_end|>`` / ``<|endoftext|>`` where present, and the declared
        ``eos_token`` (``<|eot_id|>`` for Llama 3, ``<｜end▁of▁sentence｜>`` for R1-Distill, ...)."""
        names = [*EOS_CANDIDATES, self.chat_spec.special_tokens.get("eos_token")]
        ids = (self._tok.token_to_id(t) for t in names if t)
        return tuple(dict.fromkeys(i for i in ids if i is not None))

    @property
    def pad_id(self) -> int | None:
        return self._tok.token_to_id(PAD_TOKEN)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of added tokens flagged special (Qwen3: the 14 from ``<|endoftext|>`` to ``<|video_pad|>``)."""
        return self._special_ids

    @property
    def added_ids(self) -> frozenset[int]:
        """Ids of all added tokens, special or not (Qwen3 adds ``<think>`` etc. as non-special)."""
        return self._added_ids

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the canonical serialisation: equal iff the tokenizers are configured identically."""
        return sha256_bytes(self._tok.to_str().encode("utf-8"))

    @functools.cached_property
    def base_vocab_fingerprint(self) -> str:
        """sha256 of the BPE vocabulary (token -> id) and merges only.

        Independent of added tokens and of file formatting (merges as ``"a b"`` or ``["a", "b"]``): a
        tokenizer extended with extra added tokens keeps it. Normalizer and pre-tokenizer are not part of it.
        """
        model = json.loads(self._tok.to_str())["model"]
        vocab = sorted(((i, t) for t, i in model.get("vocab", {}).items()), key=lambda x: x[0])
        merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])]
        canon = {"type": model.get("type"), "vocab": vocab, "merges": merges}
        return sha256_bytes(json.dumps(canon, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def keep_last_tokens(tokenizer: Tokenizer, texts: Sequence[str], max_tokens: int) -> list[str]:
    """Each text cut to its last ``max_tokens`` tokens (the end is what the next token depends on).

    The one context truncation: ``rpt-train`` rollouts and ``rpt-data export verl`` both call it, so a
    context becomes the same prompt in both. A text that fits is returned unchanged; a cut inside a
    multi-byte character decodes to U+FFFD, and those orphans are dropped rather than shown.
    """
    out = []
    for text, ids in zip(texts, tokenizer.encode_batch(texts), strict=True):
        out.append(text if len(ids) <= max_tokens else tokenizer.decode(ids[-max_tokens:]).lstrip("\ufffd"))
    return out


def _describe_mismatch(pieces: list[bytes], data: bytes, source: str) -> str:
    pos = 0
    for k, piece in enumerate(pieces):
        if data[pos : pos + len(piece)] != piece:
            return (
                f"tokenizer {source}: token #{k} bytes {piece!r} do not match text bytes "
                f"{data[pos : pos + len(piece)]!r} at byte {pos} (text not byte-exactly representable?)"
            )
        pos += len(piece)
    return (
        f"tokenizer {source}: tokens cover {pos} of {len(data)} text bytes "
        f"(next bytes {data[pos : pos + 16]!r} were dropped: missing byte alphabet?)"
    )
