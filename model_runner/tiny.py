"""A tiny, random-weight PerceptionLM built offline from the real transformers classes.

It has PLM's real shape where it matters to the pipeline (448 px frames, patch 14, 2x2
pooling, so 256 tokens per frame; PLM's chat template and special tokens) and is tiny
everywhere else (one-block PE-Core vision tower, two-layer Llama, a 512-token BPE vocabulary
trained in-process). Its text is noise: it exists so the pipeline, tests and demo run with no
model hub. Real results need ``--model facebook/Perception-LM-1B`` or a local copy of it.
"""

from __future__ import annotations

import torchvision_shim  # noqa: F401  (first: torchvision and transformers need it, see torchvision_shim.py)

# isort: split

import json
import os
import shutil

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    PerceptionLMConfig,
    PerceptionLMForConditionalGeneration,
    PerceptionLMImageProcessor,
    PerceptionLMProcessor,
    PerceptionLMVideoProcessor,
    PreTrainedTokenizerFast,
    TimmWrapperConfig,
)

TILE = 448
PATCH = 14
POOL = 2
MARKER = "plm_index_tiny.json"

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|image|>", "<|video|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

DEFAULT_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual "
                  "content that the user provides, and assist the user with a variety of tasks using natural "
                  "language.")

# PLM's chat template, as the official checkpoint conversion writes it: Llama-3 headers, the
# default system prompt, media tokens before the user's text, and BOS emitted by the template.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}"
    "    {%- set system_message = '" + DEFAULT_SYSTEM + "' %}"
    "{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- system_message }}"
    "{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<|image|>' }}"
    "{%- endfor %}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<|video|>' }}"
    "{%- endfor %}"
    "{%- for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{- content['text'] | trim }}"
    "{%- endfor %}"
    "{{'<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

_CORPUS = [
    "The person picks up the red cup and pours water into it on the kitchen table.",
    "A man slices a tomato vertically with a knife, then places the slices on a plate.",
    "Question: What does the subject do? Options: (A) cut (B) pour (C) stir (D) wash.",
    "[0, 7]: walks to the sink\n[8, 31]: washes a bowl",
    "Describe the video in detail. The woman ties her shoes and runs outside.",
    "You are a helpful language and vision assistant. system user assistant",
]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with PLM's special tokens, trained in-process."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 20, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    # Like Llama-3, the tokenizer itself adds BOS; the chat template emits it too, so callers
    # tokenise templated text with add_special_tokens=False.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
        extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"},
        model_max_length=16384,
    )


def build_tiny_plm(out_dir: str, seed: int = 0) -> str:
    """Build, save and return the directory of a tiny random PerceptionLM checkpoint."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    image_processor = PerceptionLMImageProcessor(
        vision_input_type="thumb+tile", tile_size=TILE, max_num_tiles=4,
        size={"height": TILE, "width": TILE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    video_processor = PerceptionLMVideoProcessor(size={"height": TILE, "width": TILE})
    processor = PerceptionLMProcessor(image_processor=image_processor, video_processor=video_processor,
                                      tokenizer=tokenizer, patch_size=PATCH, pooling_ratio=POOL,
                                      chat_template=CHAT_TEMPLATE)
    eos = [tokenizer.convert_tokens_to_ids("<|end_of_text|>"), tokenizer.eos_token_id]
    text_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=16384, rms_norm_eps=1e-5,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                              pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    # PLM-1B/3B's timm architecture (PE-Core L/14), shrunk through model_args.
    vision_config = TimmWrapperConfig(
        architecture="vit_pe_core_large_patch14_336", num_labels=0,
        model_args={"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": (TILE, TILE),
                    "global_pool": "", "use_post_transformer_norm": False, "init_values": 0.1,
                    "ref_feat_shape": (TILE // PATCH, TILE // PATCH)})
    config = PerceptionLMConfig(text_config=text_config, vision_config=vision_config,
                                projector_pooling_ratio=POOL, vision_use_cls_token=True,
                                image_token_id=tokenizer.image_token_id, video_token_id=tokenizer.video_token_id)
    model = PerceptionLMForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(do_sample=False, bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    tmp = out_dir.rstrip("/") + ".building"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    with open(os.path.join(tmp, MARKER), "w") as f:
        json.dump({"tiny_random_plm": True, "seed": seed,
                   "note": "random weights: generated text is noise"}, f)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def is_tiny(model_dir: str) -> bool:
    """Whether a checkpoint directory holds the tiny random model."""
    return os.path.exists(os.path.join(model_dir, MARKER))
