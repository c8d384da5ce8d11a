"""A trained run's model for generation (floor 6): the checkpoint's model and tokenizer,
LoRA merged, in eval mode. Imports: autograd (backend), model (checkpoint), nn.lora.
"""

import os

from ..autograd import backend
from ..model.checkpoint import CheckpointError, load_training_state
from ..nn.lora import lora_layers, merge_lora
from .run_folder import CHECKPOINT


def load_for_inference(out_dir, device="cpu"):
    """(model, tokenizer) from out_dir/ckpt.npz (or a .npz path), in eval mode."""
    path = out_dir if str(out_dir).endswith(".npz") else os.path.join(out_dir, CHECKPOINT)
    state = load_training_state(path)
    if state.tokenizer is None:
        raise CheckpointError(f"{path} holds no tokenizer")
    dtype = (state.meta.get("train_config") or {}).get("dtype")
    model = state.build_model(dtype=dtype if dtype in ("float32", "float64") else None)
    if lora_layers(model):
        merge_lora(model)       # plain weights: generation runs as fast as without LoRA
    model.to(backend.normalize_device(device))
    model.eval()
    return model, state.tokenizer
