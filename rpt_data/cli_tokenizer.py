"""``rpt-data tokenizer ...``: train a small Qwen-style BPE tokenizer from a corpus.

``rpt-data tokenizer train CORPUS... --vocab-size 2048 --out DIR`` writes ``DIR/tokenizer.json``
(atomically) and prints one summary line. Texts come from a ``texts_from(paths)`` function; for now it
reads OmniMATH-style ``.jsonl`` records and fills ``--text-template`` (default
``{problem}\\n\\n{solution}``) with their fields.
"""

from __future__ import annotations

import json
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import click

from rpt_data.tokenizer_train import MIN_VOCAB_SIZE, train_tokenizer
from rpt_train.errors import RptError
from rpt_train.progress import Progress
from rpt_train.tokenizer import Tokenizer

DEFAULT_TEMPLATE = "{problem}\n\n{solution}"
TextsFrom = Callable[[Sequence[Path]], Iterable[str]]


def template_fields(template: str) -> list[str]:
    """Field names used by a ``str.format`` template; only plain record keys are allowed."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise RptError(f"bad text template {template!r}: {exc}") from None
    if not names:
        raise RptError(f"text template {template!r} uses no record field (e.g. {{problem}})")
    for name in names:
        if not name.isidentifier():
            raise RptError(f"text template field {{{name}}} must be a plain record key")
    return names


def jsonl_texts(paths: Sequence[Path], template: str, skipped: Counter) -> Iterator[str]:
    """One text per JSON record; records lacking a template field or giving empty text are counted skips."""
    fields = template_fields(template)
    for path in paths:
        if path.suffix != ".jsonl":
            raise RptError(f"{path}: only .jsonl corpora are supported for now")
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RptError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise RptError(f"{path}:{lineno}: expected a JSON object")
                if any(record.get(name) is None for name in fields):
                    skipped["missing field"] += 1
                    continue
                text = template.format_map({name: record[name] for name in fields})
                if not text.strip():
                    skipped["empty text"] += 1
                    continue
                yield text


def _unescape(template: str) -> str:
    # Shells pass "\n" literally; a template is far more likely to mean a newline than a backslash.
    return template.replace("\\n", "\n").replace("\\t", "\t")


def run_train(
    paths: Sequence[Path],
    out: Path,
    vocab_size: int,
    min_frequency: int,
    texts_from: TextsFrom,
    quiet: bool = False,
) -> str:
    """Train, write ``out/tokenizer.json`` atomically and return the summary line."""
    start = time.perf_counter()
    counts = {"texts": 0, "chars": 0}
    progress = Progress(None, unit="docs", desc="tokenizer train", quiet=quiet)

    def counted(texts: Iterable[str]) -> Iterator[str]:
        for text in texts:
            counts["texts"] += 1
            counts["chars"] += len(text)
            progress.update(1, chars=len(text))
            yield text

    with progress:
        raw = train_tokenizer(counted(texts_from(paths)), vocab_size=vocab_size, min_frequency=min_frequency)
    if counts["texts"] == 0:
        raise RptError(f"no texts found in {len(paths)} corpus file(s): nothing to train on")
    tok = Tokenizer(raw, source="trained")
    file = tok.save(out)
    return (
        f"wrote {file}: vocab {tok.vocab_size} ({tok.base_vocab_size} BPE + "
        f"{tok.vocab_size - tok.base_vocab_size} added) from {counts['texts']} texts "
        f"({counts['chars']:,} chars), fingerprint {tok.fingerprint[:12]}, "
        f"{time.perf_counter() - start:.1f}s"
    )


@click.group("tokenizer")
def tokenizer_group() -> None:
    """Tokenizer tools."""


@tokenizer_group.command("train")
@click.argument(
    "corpus", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--vocab-size",
    type=click.IntRange(min=MIN_VOCAB_SIZE),
    default=2048,
    show_default=True,
    help="Total tokens: 256 bytes + merges + 5 added chat tokens.",
)
@click.option("--min-frequency", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory."
)
@click.option(
    "--text-template",
    default=DEFAULT_TEMPLATE,
    help=r"str.format template over record fields; \n means newline.  [default: {problem}\n\n{solution}]",
)
@click.option("--quiet", is_flag=True, help="No progress display.")
def train_command(
    corpus: tuple[Path, ...], vocab_size: int, min_frequency: int, out: Path, text_template: str, quiet: bool
) -> None:
    """Train a Qwen-style byte-level BPE on CORPUS files and write OUT/tokenizer.json."""
    skipped: Counter = Counter()
    template = _unescape(text_template)

    def texts_from(paths: Sequence[Path]) -> Iterable[str]:
        return jsonl_texts(paths, template, skipped)

    try:
        summary = run_train(list(corpus), out, vocab_size, min_frequency, texts_from, quiet=quiet)
    except RptError as exc:
        # Skip counts explain an empty corpus (e.g. a template naming a field no record has).
        raise click.ClickException(f"{exc}; skipped: {_skips(skipped)}") from None
    click.echo(f"{summary}; skipped: {_skips(skipped)}")


def _skips(skipped: Counter) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "none"


__all__ = ["jsonl_texts", "run_train", "template_fields", "tokenizer_group"]
