"""``rpt-train eval``: easy / medium / hard next-token accuracy of models on the val/ shards."""

from __future__ import annotations

import click

from rpt_train.cli_common import config_option
from rpt_train.config import build_config, load_toml_section
from rpt_train.eval_run import EvalConfig, run_eval


@click.command("eval")
@click.argument("shards")
@config_option("eval")
@click.option("--base", help="The model before RPT (plotted at step 0).")
@click.option("--run", "run_dir", help="An `rpt-train run` output directory: evaluates every checkpoint.")
@click.option("--model", "models", multiple=True, help="Any other HF-format model directory (repeatable).")
@click.option("--out", help="Where eval.json and eval.png go.")
@click.option("--split", help="Shard split to evaluate on (default val).")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["ntp", "reasoning"]), help="Repeatable.")
@click.option("--template", help="Prompt template for reasoning mode: plain, qwen3-think, answer-tags.")
@click.option("--answer-tokens", type=int, help="plain template: tokens that form the prediction.")
@click.option("--instruction-file", help="Replace the template's instruction text.")
@click.option("--max-samples", type=int, help="Positions per bucket, chosen deterministically.")
@click.option("--max-prompt-tokens", type=int)
@click.option("--max-new-tokens", type=int)
@click.option("--temperature", type=float, help="Reasoning rollouts: 0 = greedy, else one sample.")
@click.option("--batch-size", type=int)
@click.option("--seed", type=int)
@click.option("--device")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]))
@click.option("--quiet", is_flag=True, default=None)
@click.pass_context
def eval_cmd(
    ctx: click.Context, shards: str, config: str | None, run_dir: str | None, **opts: object
) -> None:
    """Evaluate models on SHARDS/val: a Table-1-style console table, eval.json and eval.png."""
    given = {k: v for k, v in opts.items() if v not in (None, ())}
    given["shards"] = shards
    if run_dir:
        given["run"] = run_dir
    # The [eval] table of a recipe, then the [train] template settings so eval matches training.
    file_layer = {}
    if config:
        train = load_toml_section(config, "train")
        file_layer = {k: train[k] for k in ("template", "answer_tokens", "max_prompt_tokens") if k in train}
        file_layer.update(load_toml_section(config, "eval"))
    run_eval(build_config(EvalConfig, file_layer, given))
