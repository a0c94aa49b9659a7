"""Tiny random-initialised Qwen-VL models with a real processor, built offline in well under a second.

`build_tiny_model(family, out_dir)` writes a normal Hugging Face folder that `AutoProcessor.from_pretrained` and
`AutoModelForImageTextToText.from_pretrained` load with no network and no mmrl import:

- config.json / model.safetensors / generation_config.json: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model of the real
  architecture, shrunk (default: hidden 128, 2 decoder layers, vision depth 2, about 0.6M-1M parameters);
- the family's image processor (Qwen2VLImageProcessor; patch 14, or patch 16 with mean/std 0.5 for Qwen3-VL) and
  video processor (the processor classes require one);
- a byte-level BPE tokenizer (Qwen2's pre-tokenizer, trained on the spot with `tokenizers`) holding the family's
  special tokens, so every string tokenizes; its training text covers the synthetic data's prompts and answers;
- the family's chat template (written here, equivalent to Qwen's for text and image turns).

`mmrl tiny-model --family F --out DIR` is the command-line face of the same function.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

from mmrl.errors import UserError
from mmrl.models.prompts import CHOICES_INSTRUCTION, CHOICES_INTRO, CLASSIFICATION_INSTRUCTIONS, INSTRUCTIONS
from mmrl.types import FAMILIES

# Qwen2-VL's special tokens, in Qwen's order; Qwen2.5-VL and Qwen3-VL have the same special set
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# added but not special (they survive skip_special_tokens), as in the released tokenizers
EXTRA_TOKENS = {
    "qwen2_vl": [],
    "qwen2_5_vl": ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"],
    "qwen3_vl": ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"],
}

# Qwen2-VL's template, verbatim apart from the default system prompt (Qwen3-VL Instruct has none). Lines end in
# text, never in a tag, because transformers renders templates with trim_blocks.
_TEMPLATE = """{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}\
{% for message in messages %}DEFAULT_SYSTEM<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}<|im_end|>
{% else %}{% for content in message['content'] %}\
{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}\
{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}\
<|vision_start|><|image_pad|><|vision_end|>\
{% elif content['type'] == 'video' or 'video' in content %}\
{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}\
<|vision_start|><|video_pad|><|vision_end|>\
{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
_DEFAULT_SYSTEM = """{% if loop.first and message['role'] != 'system' %}<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}"""


def chat_template(family: str) -> str:
    """Qwen's chat template for text, image and video turns. Qwen2-VL and Qwen2.5-VL add the default system prompt
    when none is given; Qwen3-VL (Instruct) does not."""
    return _TEMPLATE.replace("DEFAULT_SYSTEM", _DEFAULT_SYSTEM if family != "qwen3_vl" else "")


def _words(text: str) -> list[str]:
    return text.split()


_COLORS = _words("red green blue yellow orange purple pink brown black white gray grey cyan magenta")
_SHAPES = _words("circle square triangle star rectangle ellipse diamond cross hexagon pentagon heart")
_PLACES = _words("left right top bottom center middle upper lower corner")
_WORDS = _words(
    "the a an is are there what which where how many much color colour shape object objects image picture photo "
    "in on of at to and or not no yes it this that these those with without one two three four five six seven "
    "eight nine ten zero answer question options option choose select letter only word think evidence box boxes "
    "region regions first then final output format please look carefully you your assistant user system helpful "
    "unknown cannot see visible hidden masked gray area be can do does did has have was were for from by as "
    "class category kind type dog cat bird car plane ship truck horse deer frog flower food animal person text "
    "small large big tiny left-most right-most above below next between near far inside outside count number "
    "I we they he she my our their its his her other same different both each every all some any more most less"
)


def builtin_corpus() -> list[str]:
    """Text the tokenizer is trained on: the synthetic data's questions, answers, prompts and completions."""
    lines = [string.printable, " ".join(string.digits), " ".join(_WORDS), " ".join(w.capitalize() for w in _WORDS)]
    for color in _COLORS:
        for shape in _SHAPES:
            lines.append(f"Is there a {color} {shape}? What color is the {shape}? Where is the {color} {shape}?")
            lines.append(f"How many {shape}s are there? The {shape} is {color}. A {color} {shape}.")
    for place in _PLACES:
        lines.append(f"The object is at the {place}. {place} {place.capitalize()}")
    for n in range(0, 1001, 7):
        a, b, c, d = n % 97, (n * 3) % 113, (n * 7) % 1000, (n * 11) % 1000
        lines.append(f"<think>The evidence is in <box>[[{a},{b},{c},{d}]]</box>.</think><answer>{n % 20}</answer>")
        lines.append(f"[{a}, {b}, {c}, {d}] [[{a}, {b}, {c}, {d}], [{d},{c},{b},{a}]] {n} {n}.")
    for answer in _COLORS + _SHAPES + _PLACES + ["yes", "no", "unknown"] + [str(i) for i in range(20)]:
        lines.append(f"<think>The evidence is in <box>[[12,34,56,78]]</box>.</think><answer>{answer}</answer>")
        lines.append(f"<answer>{answer}</answer> {answer}")
    lines.append("Answer with the letter of the correct option. Options: A. red B. blue C. green D. yellow")
    lines.append("(A) (B) (C) (D) A. B. C. D. E. F. G. H.")

    lines += [CHOICES_INTRO, CHOICES_INSTRUCTION, *INSTRUCTIONS.values(), *CLASSIFICATION_INSTRUCTIONS.values()]
    lines.append('<bbox>[1, 2, 3, 4]</bbox> <box>(10,20),(30,40)</box> {"bbox_2d": [1, 2, 3, 4]}')
    return lines


def train_tokenizer(family: str, corpus: list[str], vocab_size: int):
    """A Qwen2Tokenizer (byte-level BPE with Qwen2's pre-tokenizer) trained on `corpus`, with the family's tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    # the full byte alphabet makes every string tokenizable, whatever the corpus held
    num_added = len(SPECIAL_TOKENS) + len(EXTRA_TOKENS[family])
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - num_added, 257), initial_alphabet=ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(bpe.model.__getstate__())
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=SPECIAL_TOKENS,
        model_max_length=32768,
        errors="replace",
    )
    if EXTRA_TOKENS[family]:
        tokenizer.add_tokens(EXTRA_TOKENS[family])
    return tokenizer


def _model_config(family: str, vocab_size: int, hidden_size: int, num_layers: int, vision_depth: int, ids: dict):
    """The HF config of a shrunk model: real architecture, tiny widths; M-RoPE sections scaled to the head size."""
    from transformers import AutoConfig

    heads = max(hidden_size // 32, 1)
    head_dim = hidden_size // heads
    half = head_dim // 2
    vision_hidden = max(hidden_size // 2, 32)
    vision_heads = max(vision_hidden // 16, 1)
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(heads // 2, 1),
        "max_position_embeddings": 32768,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    if family == "qwen3_vl":
        # Qwen3-VL interleaves the three sections (t, h, w) over the frequencies: [24, 20, 20] of 64 at full size
        hw = (half * 5) // 16
        text |= {"head_dim": head_dim, "rope_parameters": {"rope_type": "default", "rope_theta": 5e6,
                 "mrope_section": [half - 2 * hw, hw, hw], "mrope_interleaved": True}}  # fmt: skip
        vision = {"depth": vision_depth, "hidden_size": vision_hidden, "intermediate_size": vision_hidden * 2,
                  "num_heads": vision_heads, "patch_size": 16, "out_hidden_size": hidden_size,
                  "num_position_embeddings": 1024, "deepstack_visual_indexes": [0]}  # fmt: skip
    else:
        # Qwen2(.5)-VL: [16, 24, 24] of 64 at full size
        hw = (half * 3) // 8
        rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [half - 2 * hw, hw, hw]}
        text |= {"rope_parameters": rope}
        if family == "qwen2_vl":
            vision = {"depth": vision_depth, "embed_dim": vision_hidden, "hidden_size": hidden_size, "mlp_ratio": 2,
                      "num_heads": vision_heads, "patch_size": 14}  # fmt: skip
        else:
            vision = {"depth": vision_depth, "hidden_size": vision_hidden, "intermediate_size": vision_hidden * 2,
                      "num_heads": vision_heads, "patch_size": 14, "out_hidden_size": hidden_size,
                      "window_size": 112, "fullatt_block_indexes": [vision_depth - 1]}  # fmt: skip
    return AutoConfig.for_model(
        family,
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


# processor, video processor and image patch size of each family
_PROCESSOR_CLASSES = {
    "qwen2_vl": ("Qwen2VLProcessor", "Qwen2VLVideoProcessor", 14),
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor", 14),
    "qwen3_vl": ("Qwen3VLProcessor", "Qwen3VLVideoProcessor", 16),
}


def _processor(family: str, tokenizer):
    import transformers

    processor_name, video_name, patch = _PROCESSOR_CLASSES[family]
    # Qwen3-VL normalises with mean = std = 0.5; Qwen2(.5)-VL with CLIP's statistics (the class default)
    norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]} if family == "qwen3_vl" else {}
    side = patch * 2  # one merged visual token covers side x side pixels
    size = {"shortest_edge": side * side * 4, "longest_edge": side * side * 256}
    return getattr(transformers, processor_name)(
        image_processor=transformers.Qwen2VLImageProcessor(patch_size=patch, size=size, **norm),
        tokenizer=tokenizer,
        video_processor=getattr(transformers, video_name)(patch_size=patch, **norm),
        chat_template=chat_template(family),
    )


def build_tiny_model(
    family: str,
    out_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    vision_depth: int = 2,
    vocab_size: int = 1024,
    corpus: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """Build and save a tiny `family` model with its processor into `out_dir`; returns the folder."""
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r} (valid: {', '.join(FAMILIES)})")
    if hidden_size < 32 or hidden_size % 32:
        raise UserError(f"hidden size must be a positive multiple of 32, got {hidden_size}")
    if num_layers < 1 or vision_depth < 1:
        raise UserError("layers and vision depth must be at least 1")
    if vocab_size < 300:
        raise UserError(f"vocab size must be at least 300 (256 bytes + special tokens), got {vocab_size}")
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig
    from transformers.utils import logging as hf_logging

    out = Path(out_dir)
    tokenizer = train_tokenizer(family, builtin_corpus() + list(corpus or []), vocab_size)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    config = _model_config(family, len(tokenizer), hidden_size, num_layers, vision_depth, ids)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"], bos_token_id=None
    )
    out.mkdir(parents=True, exist_ok=True)
    # the one-shard progress bar is noise for a model this size
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out)
    finally:
        if progress:
            hf_logging.enable_progress_bar()
    _processor(family, tokenizer).save_pretrained(out)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmrl tiny-model", description=__doc__.split("\n")[0])
    parser.add_argument("--family", required=True, choices=FAMILIES)
    parser.add_argument("--out", required=True, help="folder to write the model and processor into")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vision-depth", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--corpus", help="a text file whose lines are added to the tokenizer's training text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace what --out holds")
    args = parser.parse_args(argv)
    out_path = Path(args.out)
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())) and not args.force:
        raise UserError(f"{out_path} exists and is not empty: refusing to replace it (--force to replace)")
    extra = None
    if args.corpus:
        path = Path(args.corpus)
        if not path.is_file():
            raise UserError(f"corpus file not found: {path}")
        extra = path.read_text(encoding="utf-8").splitlines()
    out = build_tiny_model(
        args.family, args.out, args.hidden_size, args.layers, args.vision_depth, args.vocab_size, extra, args.seed
    )
    print(f"wrote a tiny {args.family} model to {out}")
    return 0
