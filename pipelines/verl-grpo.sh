#!/usr/bin/env bash
# RPT on verl (Ray + FSDP + vLLM, the RPT paper's own stack): GRPO with RPT's prefix reward on N GPUs.
# The same samples and the same reward as `rpt-train run`, at the paper's settings (G = 8, temperature
# 0.8, lr 1e-6 constant after warmup, no KL, 256 contexts per step) and pipelines/omnimath-qwen3-0.6b.toml's
# lengths. Keys checked against verl 0.9.1 (PyPI); `make verl-check` composes this command line against
# the installed verl's own config and fails on any unknown key.
#
#   pip install verl==0.9.1 vllm && pip install -e .   # on every node: Ray workers import rpt_train
#   rpt-data build --config pipelines/omnimath-qwen3-0.6b.toml                      # -> shards/
#   rpt-data export verl shards/ verl-data/ --config pipelines/omnimath-qwen3-0.6b.toml --tokenizer Qwen/Qwen3-0.6B
#   DATA=verl-data GPUS=8 bash pipelines/verl-grpo.sh [more hydra overrides, e.g. trainer.logger=[console,wandb]]
#   PRINT_ARGS=1 bash pipelines/verl-grpo.sh          # print the verl arguments, one per line, and exit
#
# The prompt settings (template, instruction, answer tokens, context truncation) and the reward settings
# (reward, format penalty) are fixed by the export, which records them per row and in DATA/manifest.json;
# this script reads what verl must match from there. The environment variables below are rpt-train's
# options under verl's names; a hydra override given as an argument replaces anything else.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
DATA=${DATA:-verl-data}
MANIFEST=$DATA/manifest.json
[ -f "$MANIFEST" ] || { echo "error: $MANIFEST not found: run 'rpt-data export verl SHARDS $DATA' first" >&2; exit 1; }
DATA=$(cd "$DATA" && pwd)   # absolute: Ray workers need not share this working directory

# What the export decided (see rpt_data/export/verl.py verl_settings): shell assignments, safely quoted.
SETTINGS=$("$PYTHON" - "$MANIFEST" <<'PY'
import json, shlex, sys
m = json.load(open(sys.argv[1], encoding="utf-8"))
if m.get("format") != "verl-rl-parquet":
    sys.exit(f"error: {sys.argv[1]} is not a manifest of `rpt-data export verl`")
v = m["verl"]
values = {
    "TEMPLATE": m["template"]["name"],
    "PROMPT_FORM": v["prompt_form"],
    "CHAT_TEMPLATE": v["custom_chat_template"] or "",
    "ENABLE_THINKING": str(bool(v["enable_thinking"])),
    "EXPORT_PROMPT_LENGTH": v["max_prompt_length"] or "",
    "EXPORT_RESPONSE_LENGTH": v["max_response_length"] or "",
    "REWARD_PATH": v["reward_function"]["path"],
    "REWARD_NAME": v["reward_function"]["name"],
    "HAS_VAL": "1" if "val" in m["files"] else "",
}
for name, value in values.items():
    print(f"{name}={shlex.quote(str(value))}")
PY
)
eval "$SETTINGS"

MODEL=${MODEL:-Qwen/Qwen3-0.6B}        # --model                   -> actor_rollout_ref.model.path
OUT=$(realpath -m "${OUT:-runs/verl-rpt}")  # --out                -> trainer.default_local_dir
GPUS=${GPUS:-8}                        # torchrun --nproc-per-node -> trainer.n_gpus_per_node
NODES=${NODES:-1}                      #                           -> trainer.nnodes
BATCH=${BATCH:-256}                    # --batch-size x ranks      -> data.train_batch_size (contexts per step)
MICRO=${MICRO:-8}                      # --micro-batch-size        -> actor.ppo_micro_batch_size_per_gpu
MAX_STEPS=${MAX_STEPS:-1000}           # --max-steps               -> trainer.total_training_steps
LR=${LR:-1e-6}                         # --lr                      -> actor.optim.lr
WARMUP=${WARMUP:-20}                   # --warmup-steps            -> actor.optim.lr_warmup_steps
G=${G:-8}                              # --num-generations         -> actor_rollout_ref.rollout.n
TEMPERATURE=${TEMPERATURE:-0.8}        # --temperature             -> actor_rollout_ref.rollout.temperature
EPSILON=${EPSILON:-0.2}                # --epsilon / --epsilon-high -> actor.clip_ratio_low / clip_ratio_high
EPSILON_HIGH=${EPSILON_HIGH:-$EPSILON}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-4096} # --max-new-tokens          -> data.max_response_length
SAVE_EVERY=${SAVE_EVERY:-100}          # --save-every              -> trainer.save_freq
VAL_EVERY=${VAL_EVERY:-100}            # --val-every               -> trainer.test_freq
VAL_SAMPLES=${VAL_SAMPLES:-256}        # --val-samples             -> data.val_max_samples
SEED=${SEED:-0}                        # --seed                    -> data.seed
TP=${TP:-1}                            # vLLM tensor parallelism (a 0.6B policy needs none)

# The longest exported prompt in tokens (the context cut to --max-prompt-tokens, plus the instruction and
# chat markers): verl would left-truncate a longer one at the token level, cutting the instruction.
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-$EXPORT_PROMPT_LENGTH}
[ -n "$MAX_PROMPT_LENGTH" ] || { echo "error: the export counted no prompt lengths (no tokenizer): re-export with --tokenizer or set MAX_PROMPT_LENGTH" >&2; exit 1; }
# plain: the prediction is the first --answer-tokens tokens, so verl must generate no more than that.
RESPONSE_LENGTH=${EXPORT_RESPONSE_LENGTH:-$MAX_NEW_TOKENS}

VAL_FILES=$DATA/val.parquet; VALIDATE=(trainer.test_freq="$VAL_EVERY" trainer.val_before_train=True)
if [ -z "$HAS_VAL" ]; then   # verl needs val files even when it never validates
  VAL_FILES=$DATA/train.parquet; VALIDATE=(trainer.test_freq=-1 trainer.val_before_train=False)
fi
PROMPT=(+data.apply_chat_template_kwargs.enable_thinking="$ENABLE_THINKING")   # qwen3-think: True
if [ "$PROMPT_FORM" = raw ]; then   # plain: the raw context is the whole prompt, no chat markers
  PROMPT+=("actor_rollout_ref.model.custom_chat_template='$CHAT_TEMPLATE'")
fi

ARGS=(
  # ---- data: the export (rpt-data export verl) and the lengths it implies
  data.train_files="$DATA/train.parquet"
  data.val_files="$VAL_FILES"
  data.val_max_samples="$VAL_SAMPLES"
  data.prompt_key=prompt                                 # chat messages (see rpt_data/export/verl.py)
  data.reward_fn_key=data_source                         # "rpt" on every row
  data.max_prompt_length="$MAX_PROMPT_LENGTH"
  data.max_response_length="$RESPONSE_LENGTH"
  data.filter_overlong_prompts=False                     # every exported prompt fits by construction
  data.truncation=error
  data.train_batch_size="$BATCH"
  data.seed="$SEED"
  "${PROMPT[@]}"
  # ---- the reward: rpt_train.verl_reward.compute_score (the extraction and reward of rpt-train run);
  # --reward / --format-penalty were stored per row by the export; to change them without re-exporting:
  # +reward.custom_reward_function.reward_kwargs.format_penalty=-1.0 (verl < 0.9: custom_reward_function.*)
  reward.custom_reward_function.path="$REPO/$REWARD_PATH"
  reward.custom_reward_function.name="$REWARD_NAME"
  reward.reward_manager.name=naive                       # decodes with skip_special_tokens=True
  # ---- GRPO (--advantage group: z-score within the group; mean (Dr. GRPO) = norm_adv_by_std_in_grpo=False)
  algorithm.adv_estimator=grpo
  algorithm.norm_adv_by_std_in_grpo=True
  # ---- no KL (--beta 0): neither a KL loss nor a KL penalty in the reward, so no reference model
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.actor.kl_loss_coef=0
  algorithm.use_kl_in_reward=False
  algorithm.kl_ctrl.kl_coef=0
  # ---- policy update (--loss-agg, --epsilon, --num-iterations 1, one optimizer step per batch)
  actor_rollout_ref.model.path="$MODEL"
  actor_rollout_ref.model.enable_gradient_checkpointing=True   # --gradient-checkpointing on
  actor_rollout_ref.actor.loss_agg_mode=token-mean
  actor_rollout_ref.actor.clip_ratio_low="$EPSILON"
  actor_rollout_ref.actor.clip_ratio_high="$EPSILON_HIGH"
  actor_rollout_ref.actor.ppo_epochs=1
  actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH"
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$MICRO"
  actor_rollout_ref.actor.optim.lr="$LR"
  actor_rollout_ref.actor.optim.lr_warmup_steps="$WARMUP"
  actor_rollout_ref.actor.optim.lr_scheduler_type=constant
  actor_rollout_ref.actor.optim.weight_decay=0.01          # --weight-decay
  actor_rollout_ref.actor.optim.clip_grad=1.0              # --max-grad-norm
  # ---- rollouts (vLLM): G samples per context at the training temperature; validation is greedy
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.n="$G"
  actor_rollout_ref.rollout.temperature="$TEMPERATURE"
  actor_rollout_ref.rollout.top_p=1.0                    # --top-p
  actor_rollout_ref.rollout.top_k=-1                     # --top-k 0
  actor_rollout_ref.rollout.val_kwargs.do_sample=False   # --val-every: greedy, like rpt-train
  actor_rollout_ref.rollout.tensor_model_parallel_size="$TP"
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$MICRO"
  # ---- trainer: steps, checkpoints, validation, where
  trainer.total_training_steps="$MAX_STEPS"
  trainer.save_freq="$SAVE_EVERY"
  "${VALIDATE[@]}"
  trainer.default_local_dir="$OUT"
  trainer.n_gpus_per_node="$GPUS"
  trainer.nnodes="$NODES"
  trainer.project_name=rpt
  trainer.experiment_name="rpt-$TEMPLATE"
  trainer.logger=[console]
  "$@"
)

if [ -n "${PRINT_ARGS:-}" ]; then
  printf '%s\n' "${ARGS[@]}"
  exit 0
fi
"$PYTHON" -c "import rpt_train.verl_reward" 2>/dev/null \
  || { echo "error: rpt_train is not importable by $PYTHON: run 'pip install -e $REPO' (on every node)" >&2; exit 1; }
exec "$PYTHON" -m verl.trainer.main_ppo "${ARGS[@]}"
