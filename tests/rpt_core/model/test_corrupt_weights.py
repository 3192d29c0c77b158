"""A truncated or overwritten model.safetensors is one error line naming the file, wherever it is loaded
(a model directory, a training checkpoint); so is a broken sharded-weights index."""

from __future__ import annotations

import shutil

import pytest

from rpt_core.model import Qwen3ForCausalLM
from rpt_core.model.hf_io import INDEX_NAME, WEIGHTS_NAME
from rpt_core.runtime.errors import RptError
from rpt_train.rl.checkpoint import load_checkpoint, save_checkpoint
from tests.helpers import save_model_dir, tiny_model, tiny_tokenizer, truncate


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_weights_file_is_one_line_naming_it(tmp_path, damage):
    model_dir = save_model_dir(tmp_path / "m", tiny_tokenizer())
    weights = model_dir / WEIGHTS_NAME
    if damage == "truncated":
        truncate(weights)
    else:
        weights.write_bytes(b"not safetensors" if damage == "garbage" else b"")
    with pytest.raises(
        RptError, match=rf"^{weights}: not a readable safetensors file \(.*\); the checkpoint is"
    ):
        Qwen3ForCausalLM.from_pretrained(model_dir, device="cpu")


def test_a_damaged_training_checkpoint_names_its_weights(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    ckpt = save_checkpoint(
        tmp_path / "run", 1, {"model": model.state_dict(), "step": 1}, model.config, None, {}
    )
    truncate(ckpt / WEIGHTS_NAME, keep=0.9)
    with pytest.raises(RptError, match=rf"^{ckpt / WEIGHTS_NAME}: not a readable safetensors file"):
        load_checkpoint(ckpt)


def test_a_broken_index_of_sharded_weights_is_one_line(tmp_path):
    model_dir = save_model_dir(tmp_path / "m", tiny_tokenizer())
    shutil.move(model_dir / WEIGHTS_NAME, model_dir / "model-00001-of-00001.safetensors")
    (model_dir / INDEX_NAME).write_text('{"weight_map": ')
    with pytest.raises(RptError, match=rf"^{model_dir / INDEX_NAME}: not a safetensors index"):
        Qwen3ForCausalLM.from_pretrained(model_dir, device="cpu")
