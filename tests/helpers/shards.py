"""Shard rows for the tests.

The tiny synthetic next-token task the rollout, log-prob and trainer tests share: contexts are
space-separated letters a-h; the continuation is a fixed permutation of the last letter (and of that one),
so a 2-layer model can learn it in seconds and the learning test can demand a clear rise. For RLP (a
thought before the next token) ``repeat_rows`` is a variant with real ground-truth token ids (the next token
repeats the last letter).

``shard_row``: one row from ground-truth token texts (each one ``byte_tokenizer`` token), for the
evaluation tests.
"""

from __future__ import annotations

import json
import random
from itertools import accumulate
from pathlib import Path

from rpt_core.data import shards
from rpt_core.text.tokenizer import Tokenizer
from tests.helpers.text import LETTERS, byte_tokenizer


def next_letter(c: str) -> str:
    return LETTERS[(LETTERS.index(c) * 3 + 1) % len(LETTERS)]  # a fixed permutation of the letters


def task_row(rng: random.Random, i: int) -> dict:
    """Context ' c e b ...'; the continuation is ' x y' with x = next_letter(last), y = next_letter(x)."""
    letters = [rng.choice(LETTERS) for _ in range(rng.randint(2, 6))]
    x = next_letter(letters[-1])
    y = next_letter(x)
    return dict(
        doc_id=f"doc{i}",
        position=len(letters),
        context="".join(" " + c for c in letters),
        label=f" {x} {y}".encode(),
        boundaries=[2, 4],
        entropy=1.0,
        n_context_tokens=len(letters),
        token_id=0,
        label_token_ids=[0, 0],
        domain=["synthetic"],
        difficulty=None,
        source="test",
    )


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


def shard_row(doc: str, context: str, pieces: list[str], entropy: float, position: int = 0) -> dict:
    """One shard row whose label is the given ground-truth token texts (each one ``byte_tokenizer`` token)."""
    ids = [_BYTES.encode(p)[0] for p in pieces]
    return {
        "doc_id": doc,
        "position": position,
        "context": context,
        "label": "".join(pieces).encode(),
        "boundaries": list(accumulate(len(p.encode()) for p in pieces)),
        "entropy": entropy,
        "n_context_tokens": position,
        "token_id": ids[0],
        "label_token_ids": ids,
    }


_BYTES = byte_tokenizer()
