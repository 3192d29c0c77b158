"""The tiny synthetic next-token task the rollout, log-prob and trainer tests share.

Contexts are space-separated letters a-h; the continuation is a fixed permutation of the last letter (and
of that one), so a 2-layer model can learn it in seconds and the learning test can demand a clear rise.

For RLP (a thought before the next token) the kit also has a tokenizer with ``<think>`` / ``</think>``,
a variant of the task with real ground-truth token ids (the next token repeats the last letter), and a
model briefly pretrained on ``context <think> z </think> z`` with z a random letter: it has learned to
write a one-letter thought and to copy it after ``</think>``, but not which letter helps, which is what
RLP's information gain then teaches.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import tokenizers
import torch
import torch.nn.functional as F
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers

from rpt_core.data import shards
from rpt_core.model import Qwen3Config, Qwen3ForCausalLM
from rpt_core.text.tokenizer import Tokenizer

LETTERS = "abcdefgh"


def letters_bpe(letters: str = LETTERS) -> tokenizers.Tokenizer:
    """Byte-level BPE over ' ' and the letters: ids 0-8 for the characters, then one ' x' merge per letter
    in the order of ``letters`` (another order, another base vocabulary), then <|endoftext|>."""
    chars = ["Ġ", *LETTERS]
    merges = [("Ġ", c) for c in letters]
    vocab = {c: i for i, c in enumerate(chars)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


def tiny_tokenizer(think: bool = False) -> Tokenizer:
    """Byte-level BPE over ' ' and a-h: tokens ' a'..' h' (and bare letters), plus <|endoftext|> (and with
    ``think`` the non-special added tokens <think> and </think>, as in Qwen3)."""
    tok = letters_bpe()
    if think:
        tok.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    return Tokenizer(tok)


def next_letter(c: str) -> str:
    return LETTERS[(LETTERS.index(c) * 3 + 1) % len(LETTERS)]  # a fixed permutation of the letters


def task_row(rng: random.Random, i: int) -> dict:
    """Context ' c e b ...'; the continuation is ' x y' with x = next_letter(last), y = next_letter(x)."""
    letters = [rng.choice(LETTERS) for _ in range(rng.randint(2, 6))]
    x = next_letter(letters[-1])
    y = next_letter(x)
    return dict(doc_id=f"doc{i}", position=len(letters), context="".join(" " + c for c in letters),
                label=f" {x} {y}".encode(), boundaries=[2, 4], entropy=1.0, n_context_tokens=len(letters),
                token_id=0, label_token_ids=[0, 0], domain=["synthetic"], difficulty=None,
                source="test")  # fmt: skip


def task_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [task_row(rng, i) for i in range(n)]


def repeat_rows(n: int, seed: int, tok: Tokenizer) -> list[dict]:
    """RLP's variant of the task: the next token repeats the last letter (' c e b' -> ' b ...'), with the
    real ground-truth ids under ``tok``. The thought that helps is that letter, which a model that
    copies its thought after ``</think>`` (``think_copy_model``) then predicts."""
    out = []
    for r in task_rows(n, seed):
        x = r["context"][-1]
        label = f" {x} {x}"
        ids = tok.encode(label)
        out.append({**r, "label": label.encode(), "token_id": ids[0], "label_token_ids": ids})
    return out


def write_task_shards(
    out: Path, tok: Tokenizer, n_train=512, n_val=32, files=2, fingerprint=None, repeat=False
) -> Path:
    """SHARDS/train (``files`` shards: >= 1 row group per rank) and SHARDS/val, with a manifest.

    ``repeat``: RLP's variant (``repeat_rows``) instead of the permutation task.
    """
    if repeat:
        rows, val = repeat_rows(n_train, 1, tok), repeat_rows(n_val, 2, tok)
    else:
        rows, val = task_rows(n_train, seed=1), task_rows(n_val, 2)
    per = -(-n_train // files)
    for f in range(files):
        table = shards.rows_to_table(rows[f * per : (f + 1) * per])
        shards.write_shard(out / "train" / shards.shard_name("train", 0, f), table)
    shards.write_shard(out / "val" / shards.shard_name("val", 0, 0), shards.rows_to_table(val))
    manifest = {"tokenizer_base_vocab_fingerprint": fingerprint or tok.base_vocab_fingerprint}
    (out / shards.MANIFEST_NAME).write_text(json.dumps(manifest))
    return out


def tiny_model(tok: Tokenizer, seed: int = 0, layers: int = 2) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=10_000.0, eos_token_id=None,
        torch_dtype="float32",
    )  # fmt: skip
    return Qwen3ForCausalLM(cfg).float()


def save_model_dir(path: Path, tok: Tokenizer, seed: int = 0, model: Qwen3ForCausalLM | None = None) -> Path:
    (model or tiny_model(tok, seed)).save_pretrained(path)
    tok.save(path)
    return path


def think_copy_model(tok: Tokenizer, steps: int = 200, seed: int = 0) -> Qwen3ForCausalLM:
    """A one-layer model pretrained on ``context<think> z</think> z`` (z a random letter): it writes a
    one-letter thought and copies it after ``</think>`` (p ~ 0.9 after 200 steps, ~3 s on one thread).

    One layer with untied embeddings learns the copy several times faster than ``tiny_model``'s shape.
    """
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=10_000.0, eos_token_id=None,
        tie_word_embeddings=False, torch_dtype="float32",
    )  # fmt: skip
    model = Qwen3ForCausalLM(cfg).float()
    rng = random.Random(seed)
    think, end = tok.token_to_id("<think>"), tok.token_to_id("</think>")
    letter = [tok.token_to_id("Ġ" + c) for c in LETTERS]  # ' a'..' h'
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        n = rng.randint(2, 6)  # one context length per batch: no padding needed
        rows = []
        for _ in range(16):
            z = rng.choice(letter)
            rows.append([rng.choice(letter) for _ in range(n)] + [think, z, end, z])
        ids = torch.tensor(rows)  # (16, n + 4)
        logits = model(ids[:, :-1])  # (16, n + 3, V): trained from <think> on (the context is noise)
        loss = F.cross_entropy(logits[:, n - 1 :].reshape(-1, logits.shape[-1]), ids[:, n:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@dataclass(frozen=True)
class TextTemplate:
    """An uncapped template whose prediction is the whole completion (like a chat template's answer)."""

    name: str = "text"
    thinks: bool = False
    max_new_tokens: int | None = None

    def render(self, context: str) -> str:
        return context

    def extract(self, completion_text: str) -> str | None:
        return completion_text

    def extract_ids(self, token_ids, decode_fn) -> str | None:
        return decode_fn(list(token_ids))

    def stop_after(self, token_to_id):
        return None
