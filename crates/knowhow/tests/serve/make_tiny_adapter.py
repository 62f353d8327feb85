"""A random PEFT LoRA adapter over a tiny chat model, and what transformers + peft answer with it.

Usage: python make_tiny_adapter.py BASE_DIR OUT_DIR SEED

Saves the adapter (r 4 on every linear layer, A and B random, so that it changes the answer) with peft's
save_pretrained and prints {"dir": OUT_DIR}. That knowhow applies a peft adapter as peft does is checked logit for
logit in models/tests/decoder_hf.rs; here the adapter only needs to change the answer.
"""

import json
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

base_dir, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(seed)
model = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
config = LoraConfig(
    r=4,
    lora_alpha=8,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    lora_dropout=0.0,
)
model = get_peft_model(model, config)
with torch.no_grad():
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.copy_(torch.randn(parameter.shape) * (2.0 / parameter.shape[-1] ** 0.5))
model.save_pretrained(out)
print(json.dumps({"dir": out}))
