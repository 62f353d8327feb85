"""A tiny random Qwen2 chat model in the Hugging Face layout, for `knowhow serve --llm local:DIR` in tests.

Usage: python make_tiny_qwen2.py OUT_DIR [HIDDEN LAYERS]

Byte-level BPE tokenizer trained on a few sentences, ChatML special tokens, a ChatML chat template, random
weights. The rows of the end-of-turn tokens in the output layer are zero, so their logit is 0 while the best of
the others is positive: greedy decoding never ends a reply early, and a reply cut by max_tokens is always
finish_reason "length".
"""

import json
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SENTENCES = [
    "Employees receive twenty-five days of paid vacation per year.",
    "Receipts are submitted within thirty days through the finance portal.",
    "The system answers questions from your own documents, with citations.",
    "Hello there! How can I help you today? Ask me anything.",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

out = sys.argv[1]
hidden = int(sys.argv[2]) if len(sys.argv) > 2 else 32
layers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
os.makedirs(out, exist_ok=True)

bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
bpe.train_from_iterator(SENTENCES * 4, trainer)
tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
tokenizer.chat_template = TEMPLATE
tokenizer.save_pretrained(out)

end_ids = [bpe.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
config = Qwen2Config(
    vocab_size=bpe.get_vocab_size(),
    hidden_size=hidden,
    intermediate_size=hidden * 2,
    num_hidden_layers=layers,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
    eos_token_id=end_ids[0],
    bos_token_id=end_ids[1],
)
torch.manual_seed(0)
model = Qwen2ForCausalLM(config)
with torch.no_grad():
    for name, parameter in model.named_parameters():
        if "norm" not in name and not name.endswith("bias"):
            parameter.copy_(torch.randn(parameter.shape) * (1.5 / parameter.shape[-1] ** 0.5))
    for token in end_ids:
        model.lm_head.weight[token].zero_()
model.save_pretrained(out, safe_serialization=True)
print(json.dumps({"dir": out, "vocab": bpe.get_vocab_size()}))
