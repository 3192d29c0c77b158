"""``make verl-check``: the verl export and reward checked against an installed verl, on CPU.

Runs in ``.verl-venv`` (verl from PyPI + this package), never in ``make test``. On shards built here with
the real Qwen3 tokenizer (``tests/fixtures/qwen3``), for the ``qwen3-think`` and ``plain`` templates:

1. ``rpt-data export verl`` writes the parquet files;
2. ``pipelines/verl-grpo.sh``'s arguments compose against verl's own hydra config (an unknown key fails;
   a deliberately unknown key is checked to fail) and pass verl's ``validate_config``;
3. verl's ``RLHFDataset`` loads both files with that config, and verl's prompt builder (the Continuous
   Token builder its agent loop uses, with ``data.apply_chat_template_kwargs`` and the recipe's
   ``custom_chat_template``) turns every row into exactly the prompt ids ``rpt-train`` would generate from;
4. verl's reward loader (``load_reward_manager``: ``reward.custom_reward_function`` -> ``compute_score``,
   wrapped in its naive reward manager, which decodes with ``skip_special_tokens=True``) scores completions
   exactly as ``rpt-train``'s ``extract_predictions`` + ``score_rows`` do.

Prints one line per check and exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
QWEN3 = REPO / "tests" / "fixtures" / "qwen3"
DOCS = [
    "Let x be a real number with x^2 - 5x + 6 = 0. Then (x - 2)(x - 3) = 0, so x = 2 or x = 3.",
    "The sum of the first n odd numbers is n^2. For n = 7 the sum is 49, which is 7 squared.",
    "A triangle has sides 3, 4 and 5. Since 3^2 + 4^2 = 5^2, it is a right triangle with area 6.",
]
LABEL_TOKENS = 8
PENALTY = -1.0
T0 = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {text}", flush=True)


def fail(text: str) -> None:
    print(f"verl-check FAILED: {text}", file=sys.stderr)
    sys.exit(1)


def make_shards(out: Path) -> None:
    """Rows at every 5th position of each document: context, the next LABEL_TOKENS tokens' bytes."""
    from rpt_core.data.shards import SCHEMA_VERSION, rows_to_table, shard_name, write_shard
    from rpt_core.text.tokenizer import Tokenizer

    tok = Tokenizer.load(QWEN3)
    rows = {"train": [], "val": []}
    for d, text in enumerate(DOCS):
        ids, spans = tok.encode_with_spans(text)
        data = text.encode()
        for t in range(4, len(ids) - LABEL_TOKENS, 5):
            start, end = spans[t][0], spans[t + LABEL_TOKENS - 1][1]
            rows["val" if d == len(DOCS) - 1 else "train"].append(
                {
                    "doc_id": f"doc:{d}",
                    "position": t,
                    "context": data[:start].decode(),
                    "label": data[start:end],
                    "boundaries": [e - start for _, e in spans[t : t + LABEL_TOKENS]],
                    "entropy": 1.0,
                    "n_context_tokens": t,
                    "token_id": ids[t],
                    "label_token_ids": ids[t : t + LABEL_TOKENS],
                }
            )
    for split, split_rows in rows.items():
        write_shard(out / split / shard_name(split, 0, 0), rows_to_table(split_rows))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tokenizer_base_vocab_fingerprint": tok.base_vocab_fingerprint,
    }
    (out / "manifest.json").write_text(json.dumps(manifest))


def export(shards: Path, out: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "rpt_data.cli", "export", "verl", str(shards), str(out), "--quiet",
           "--tokenizer", str(QWEN3), "--format-penalty", str(PENALTY), *args]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO)


def compose(data: Path, *extra: str):
    """verl's config with the recipe's arguments (hydra rejects a key verl does not have)."""
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    env = {**os.environ, "DATA": str(data), "PRINT_ARGS": "1"}
    script = REPO / "pipelines" / "verl-grpo.sh"
    args = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True)
    overrides = [*args.stdout.splitlines(), *extra]
    with initialize_config_dir(
        config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None
    ):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


def check_config(data: Path):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        compose(data, "data.no_such_key_in_verl=1")
    except Exception as e:  # hydra's ConfigCompositionException
        if "no_such_key_in_verl" not in str(e):
            raise
    else:
        fail("hydra accepted an unknown key: the key check would prove nothing")
    cfg = compose(data)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    if need_reference_policy(cfg):
        fail("the recipe builds a reference model: KL is not off")
    return cfg


def check_prompts(cfg, data: Path, template, rpt_tok) -> int:
    from omegaconf import OmegaConf
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    from rpt_core.data.shards import iter_rows, shard_paths
    from rpt_train.rl.rollout import encode_prompts

    hf = hf_tokenizer(str(QWEN3))
    if cfg.actor_rollout_ref.model.custom_chat_template is not None:  # as verl's agent loop does
        hf.chat_template = cfg.actor_rollout_ref.model.custom_chat_template
    kwargs = OmegaConf.to_container(cfg.data.apply_chat_template_kwargs)
    builder = create_continuous_token_builder(hf, hf_model_type="qwen3", chat_template_kwargs=kwargs)
    manifest = json.loads((data / "manifest.json").read_text())
    checked = 0
    for split in ("train", "val"):
        dataset = RLHFDataset([str(data / f"{split}.parquet")], hf, cfg.data)
        source = list(iter_rows(shard_paths(data.parent / "shards", split)))
        if len(dataset) != len(source):
            fail(f"{split}: verl loaded {len(dataset)} rows, the shards hold {len(source)}")
        for i, row in enumerate(source):
            item = dataset[i]
            ours = encode_prompts(
                rpt_tok, template, [row["context"]], manifest["config"]["max_prompt_tokens"]
            )[0]
            theirs = builder.build_initial_tokens(list(item["raw_prompt"]))
            if theirs != ours:
                fail(
                    f"{split} row {i}: verl's prompt {hf.decode(theirs)!r} != rpt's {rpt_tok.decode(ours)!r}"
                )
            if len(theirs) > cfg.data.max_prompt_length:
                fail(f"{split} row {i}: {len(theirs)} prompt tokens > data.max_prompt_length")
            checked += 1
    return checked


def completions(rpt_tok, row, template_name: str) -> list[list[int]]:
    end, eot = rpt_tok.token_to_id("<|im_end|>"), rpt_tok.token_to_id("<|endoftext|>")
    label = bytes(row["label"]).decode("utf-8", "replace")
    first, whole = label[: row["boundaries"][0]], label[: row["boundaries"][-1]]
    if template_name == "plain":
        ids = rpt_tok.encode(whole)
        return [ids[:1], ids[1:2], [end], [eot], [ids[0], eot]]
    texts = [
        f"<think>\nso\n</think>\n\n\\boxed{{{first}}}",
        f"<think>\nso\n</think>\n\n\\boxed{{{whole}}}",
        "<think>\nso\n</think>\n\n\\boxed{ nope}",
        f"<think>\nso \\boxed{{{first}}}",
        f"<think>\nso\n</think>\n\n\\boxed{{{first}",
    ]
    return [rpt_tok.encode(t) + [end] for t in texts] + [rpt_tok.encode(texts[0]) + [eot]]


def check_rewards(cfg, data: Path, template, rpt_tok) -> tuple[int, set[float]]:
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from verl import DataProto
    from verl.trainer.ppo.reward import load_reward_manager
    from verl.utils import hf_tokenizer

    from rpt_core.data.shards import iter_rows
    from rpt_core.reward import score_rows
    from rpt_train.rl.rollout import extract_predictions, stop_token_ids

    manager = load_reward_manager(cfg, hf_tokenizer(str(QWEN3)))  # verl's own reward-function loader
    exported = pq.read_table(data / "train.parquet").to_pylist()  # the verl rows
    source = iter_rows([data.parent / "shards" / "train" / "train-00000-00000.parquet"])
    checked, outcomes = 0, set()
    for verl_row, row in list(zip(exported, source, strict=False))[:6]:
        group = completions(rpt_tok, row, template.name)
        width = max(map(len, group))
        tokens = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.bool)
        for i, ids in enumerate(group):
            tokens[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), True
        finished = torch.zeros(len(group), dtype=torch.bool)  # none cut off at the length cap
        preds = extract_predictions(rpt_tok, template, tokens, mask, finished, stop_token_ids(rpt_tok))
        ours = score_rows(preds, [row], len(group), "prefix", PENALTY)[0].tolist()
        theirs = []
        for ids in group:
            item = DataProto.from_dict(
                tensors={
                    "prompts": torch.tensor([[1, 2]]),
                    "responses": torch.tensor([ids]),
                    "attention_mask": torch.ones(1, 2 + len(ids), dtype=torch.long),
                },
                non_tensors={
                    k: np.array([verl_row[k]], dtype=object)
                    for k in ("data_source", "reward_model", "extra_info")
                },
            )
            theirs.append(
                manager.loop.run_until_complete(manager.run_single(item))["reward_score"]
            )  # its own loop
        if ours != theirs:
            fail(f"{template.name} {row['doc_id']} t={row['position']}: rpt-train {ours} != verl {theirs}")
        checked += len(group)
        outcomes |= set(ours)
    return checked, outcomes


def main() -> None:
    import verl

    from rpt_core.text.prompts import load_template
    from rpt_core.text.tokenizer import Tokenizer

    say(f"verl {verl.__version__} imported on CPU (python {sys.version.split()[0]})")
    if not (QWEN3 / "tokenizer.json").is_file():
        fail(f"{QWEN3} not found: the check needs the repository's tests/fixtures/qwen3")
    rpt_tok = Tokenizer.load(QWEN3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_shards(root / "shards")
        for name, extra in (
            ("qwen3-think", ["--max-prompt-tokens", "24"]),
            ("plain", ["--answer-tokens", "2"]),
        ):
            data = root / name
            export(root / "shards", data, "--template", name, *extra)
            template = load_template(name, answer_tokens=2)
            say(f"{name}: rpt-data export verl -> {data.name}/train.parquet, val.parquet")
            cfg = check_config(data)
            say(f"{name}: pipelines/verl-grpo.sh composes against verl's config and passes validate_config")
            n = check_prompts(cfg, data, template, rpt_tok)
            counts = json.loads((data / "manifest.json").read_text())["counts"]
            cut = sum(c["contexts_truncated"] for c in counts.values())
            say(
                f"{name}: RLHFDataset + verl's prompt builder == rpt-train's prompt ids on all {n} rows "
                f"({cut} contexts left-truncated)"
            )
            n, outcomes = check_rewards(cfg, data, template, rpt_tok)
            if not {1.0, 0.0, PENALTY} <= outcomes:
                fail(f"{name}: the completions did not cover every outcome ({sorted(outcomes)})")
            say(f"{name}: verl's reward manager == rpt-train's rewards on {n} completions {sorted(outcomes)}")
    say("verl-check passed")


if __name__ == "__main__":
    main()
