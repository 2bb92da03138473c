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

from datadream_core.io import LOG, atomic_folder, atomic_path, write_json

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


# Widths are small on purpose: the 49408-token embedding tables dominate the checkpoint size.
TINY_SD = {
    "image_size": 32,
    "vae_channels": (32, 64),
    "unet_channels": (32, 64, 64),
    "unet_heads": 4,
    "text_width": 32,
    "text_layers": 3,
    "text_heads": 4,
    "max_length": 16,
}


def tiny_sd_scheduler(prediction_type: str = "v_prediction"):
    """SD's training noise schedule; v-prediction with scaled_linear betas is what a tiny model learns."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False,
                         steps_offset=1, prediction_type=prediction_type)


def tiny_vae(spec: dict = TINY_SD):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=16,
        block_out_channels=spec["vae_channels"], sample_size=spec["image_size"],
        down_block_types=("DownEncoderBlock2D",) * len(spec["vae_channels"]),
        up_block_types=("UpDecoderBlock2D",) * len(spec["vae_channels"]),
    )


def tiny_unet(spec: dict = TINY_SD):
    from diffusers import UNet2DConditionModel

    vae_factor = 2 ** (len(spec["vae_channels"]) - 1)
    return UNet2DConditionModel(
        sample_size=spec["image_size"] // vae_factor, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=spec["unet_channels"], norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=spec["text_width"], attention_head_dim=spec["unet_heads"], use_linear_projection=True,
    )


def tiny_text_encoder(tokenizer, spec: dict = TINY_SD):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=spec["text_width"], intermediate_size=4 * spec["text_width"],
        num_hidden_layers=spec["text_layers"], num_attention_heads=spec["text_heads"],
        max_position_embeddings=spec["max_length"], hidden_act="gelu", projection_dim=spec["text_width"],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))


def tiny_tokenizer(folder: str | Path, spec: dict = TINY_SD):
    """Write the offline CLIP tokenizer into `folder` and load it."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder, model_max_length=spec["max_length"]))


def save_sd_folder(folder: str | Path, vae, unet, text_encoder, tokenizer, scheduler, half: bool = False) -> Path:
    """Save the parts as a StableDiffusionPipeline folder (diffusers layout); `half` stores fp16 weights.

    Written into a staging folder beside `folder` and renamed into place, so a crash never leaves
    a half-written model that looks finished.
    """
    import shutil

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    modules = (vae, unet, text_encoder)
    with atomic_folder(folder) as staging:
        if half:
            for module in modules:
                module.half()
        try:
            pipe.save_pretrained(staging)
        finally:
            if half:
                for module in modules:
                    module.float()
        # fp16 on disk only: stock from_pretrained without a dtype still gives fp32 modules
        config_path = staging / "text_encoder" / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["dtype"] = "float32"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        # vocab.json + merges.txt (1.6 MB) instead of the 3.6 MB tokenizer.json: the same offline BPE tokenizer
        shutil.rmtree(staging / "tokenizer")
        write_clip_tokenizer(staging / "tokenizer", model_max_length=tokenizer.model_max_length)
    return Path(folder)


def build_tiny_sd(folder: str | Path, seed: int = 0, prediction_type: str = "v_prediction") -> Path:
    """Save a randomly initialised tiny StableDiffusionPipeline folder (diffusers layout)."""
    import tempfile

    folder = Path(folder)
    torch.manual_seed(seed)
    vae, unet = tiny_vae(), tiny_unet()
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = tiny_tokenizer(scratch)
    text_encoder = tiny_text_encoder(tokenizer)
    return save_sd_folder(folder, vae, unet, text_encoder, tokenizer, tiny_sd_scheduler(prediction_type))


TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 4, "width": 96, "head_width": 32, "patch_size": 4},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 3},
}


def tiny_clip_model(seed: int = 0, spec: dict = TINY_CLIP):
    """A randomly initialised tiny open_clip CLIP (ViT image tower, transformer text tower)."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(embed_dim=spec["embed_dim"], vision_cfg=open_clip.CLIPVisionCfg(**spec["vision_cfg"]),
                          text_cfg=open_clip.CLIPTextCfg(**spec["text_cfg"]))


def save_clip_folder(folder: str | Path, model, spec: dict = TINY_CLIP, half: bool = False) -> Path:
    """Save an open_clip model as a folder `load_clip` reads via local-dir; `half` stores fp16 weights."""
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": spec, "preprocess_cfg": {
        "mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic", "resize_mode": "shortest"}}
    state = {key: (value.half() if half and value.is_floating_point() else value).contiguous()
             for key, value in model.state_dict().items()}
    with atomic_path(folder / "open_clip_model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json(folder / "open_clip_config.json", config)
    return folder


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised tiny open_clip ViT as a folder `load_clip` reads via local-dir."""
    return save_clip_folder(folder, tiny_clip_model(seed))


# A tiny BLIP captioner (BlipForConditionalGeneration + BlipProcessor) for DISEF's captions in tests and
# smoke runs. BLIP's tokenizer is BERT's WordPiece with a "[DEC]" start token; a small English vocabulary
# written here stands in for bert-base-uncased's, so nothing is downloaded.
TINY_CAPTION_WORDS = (
    "a an the of on in with and at photo picture image close up view shape object small large bright dark "
    "red blue green yellow white black gray circle square triangle star cross ring stripe dot background "
    "plain textured sky field road water tree flower animal car plane bird dog cat"
).split()

TINY_BLIP = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2, "max_length": 32}


def tiny_blip_tokenizer(folder: str | Path, words=TINY_CAPTION_WORDS, model_max_length: int = TINY_BLIP["max_length"]):
    """A BertTokenizer over a small WordPiece vocabulary, with BLIP's "[DEC]" start token."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    with atomic_path(folder / "vocab.txt") as tmp:
        tmp.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True, model_max_length=model_max_length)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def tiny_blip_model(tokenizer, seed: int = 0, spec: dict = TINY_BLIP):
    """A randomly initialised BlipForConditionalGeneration whose captions depend on the image."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    width = spec["width"]
    text = dict(vocab_size=len(tokenizer), hidden_size=width, encoder_hidden_size=width, intermediate_size=2 * width,
                projection_dim=width, num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"],
                max_position_embeddings=spec["max_length"], bos_token_id=tokenizer.bos_token_id,
                sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.sep_token_id, initializer_range=0.3)
    # BLIP's own initialisation (vision std 1e-10, text 0.02) gives every image the same caption; wider
    # random weights make a tiny model's captions depend on the image, as a real captioner's do.
    vision = dict(hidden_size=width, intermediate_size=2 * width, projection_dim=width, num_hidden_layers=spec["layers"],
                  num_attention_heads=spec["heads"], image_size=spec["image_size"], patch_size=spec["patch_size"],
                  initializer_range=0.5)
    torch.manual_seed(seed)
    return BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=width,
                                                   image_text_hidden_size=width))


def build_tiny_captioner(folder: str | Path, seed: int = 0, spec: dict = TINY_BLIP) -> Path:
    """Save a tiny BLIP captioner + processor folder that `BlipForConditionalGeneration.from_pretrained` reads.

    Written into a staging folder beside `folder` and renamed into place.
    """
    import tempfile

    from transformers import BlipImageProcessor, BlipProcessor

    with atomic_folder(folder) as staging:
        with tempfile.TemporaryDirectory() as scratch:
            tokenizer = tiny_blip_tokenizer(scratch, model_max_length=spec["max_length"])
            image_processor = BlipImageProcessor(size={"height": spec["image_size"], "width": spec["image_size"]})
            BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(staging)
        tiny_blip_model(tokenizer, seed, spec).save_pretrained(staging)
    return Path(folder)


def build_tiny_model(kind: str, marker: str | Path) -> None:
    """Build the tiny `kind` model ("sd", "clip" or "captioner") in the folder of its `marker` file."""
    folder = Path(marker).parent
    {"sd": build_tiny_sd, "clip": build_tiny_clip, "captioner": build_tiny_captioner}[kind](folder, seed=0)
    LOG.info("built tiny %s model in %s", kind, folder)
