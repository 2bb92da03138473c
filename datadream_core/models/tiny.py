"""Tiny models of the same classes as the real ones, saved to disk and loaded back the real way.

Stable Diffusion: UNet2DConditionModel with cross-attention, AutoencoderKL, CLIPTextModel and a
CLIPTokenizer derived offline from the BPE vocabulary that ships inside open_clip_torch.
CLIP: an open_clip ViT from a custom config, saved as a `local-dir:` folder.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from datadream_core.io import atomic_path, write_json

SD2_PAD_TOKEN = "!"  # Stable Diffusion 2.x pads with "!" (id 0), not with the end token


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map that CLIP's BPE is built on."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def write_clip_tokenizer(folder: str | Path, model_max_length: int = 77) -> Path:
    """Write vocab.json + merges.txt (+ configs) for transformers' CLIPTokenizer from open_clip's BPE file."""
    import open_clip.tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe_path = Path(open_clip.tokenizer.default_bpe())
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [char + "</w>" for char in byte_chars] + ["".join(merge) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    write_json(folder / "vocab.json", {token: index for index, token in enumerate(vocab)})
    with atomic_path(folder / "merges.txt") as tmp:
        tmp.write_text("#version: 0.2\n" + "\n".join(" ".join(merge) for merge in merges) + "\n", encoding="utf-8")
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": SD2_PAD_TOKEN, "do_lower_case": True,
    })
    write_json(folder / "special_tokens_map.json", {
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": SD2_PAD_TOKEN,
    })
    return folder


TINY_SD = {
    "image_size": 32,
    "vae_channels": (32, 64),
    "unet_channels": (32, 64, 64),
    "text_width": 64,
    "text_layers": 3,
    "text_heads": 4,
    "max_length": 16,
}


def build_tiny_sd(folder: str | Path, seed: int = 0, prediction_type: str = "v_prediction") -> Path:
    """Save a randomly initialised tiny StableDiffusionPipeline folder (diffusers layout)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    spec = TINY_SD
    vae_factor = 2 ** (len(spec["vae_channels"]) - 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=16,
        block_out_channels=spec["vae_channels"], sample_size=spec["image_size"],
        down_block_types=("DownEncoderBlock2D",) * len(spec["vae_channels"]),
        up_block_types=("UpDecoderBlock2D",) * len(spec["vae_channels"]),
    )
    unet = UNet2DConditionModel(
        sample_size=spec["image_size"] // vae_factor, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=spec["unet_channels"], norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=spec["text_width"], attention_head_dim=4, use_linear_projection=True,
    )
    tokenizer_dir = write_clip_tokenizer(folder / "tokenizer", model_max_length=spec["max_length"])
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=spec["text_width"], intermediate_size=4 * spec["text_width"],
        num_hidden_layers=spec["text_layers"], num_attention_heads=spec["text_heads"],
        max_position_embeddings=spec["max_length"], hidden_act="gelu", projection_dim=spec["text_width"],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    # v-prediction with SD's scaled_linear betas: the combination a tiny model learns (miniworld notes).
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 96, "head_width": 32, "patch_size": 4},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
}


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised tiny open_clip ViT as a folder `load_clip` reads via local-dir."""
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=TINY_CLIP["embed_dim"],
                           vision_cfg=open_clip.CLIPVisionCfg(**TINY_CLIP["vision_cfg"]),
                           text_cfg=open_clip.CLIPTextCfg(**TINY_CLIP["text_cfg"]))
    config = {"model_cfg": TINY_CLIP, "preprocess_cfg": {
        "mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic", "resize_mode": "shortest"}}
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    with atomic_path(folder / "open_clip_model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json(folder / "open_clip_config.json", config)
    return folder
