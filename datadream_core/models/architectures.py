"""The real-size architectures with random weights: parameter counts, benchmarks and the rehearsal
(`make rehearse`), which runs the paper's setting on them where the real weights cannot be downloaded.

Each is saved in the layout its loader reads (diffusers folder, open_clip `local-dir:` folder, BLIP
save_pretrained folder, pytorch-fid state dict), so the jobs load it through the same code as the real one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import torch

from datadream_core.io import LOG

# stabilityai/stable-diffusion-2-1-base unet/config.json (the fields that shape the network).
SD21_BASE_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024, "use_linear_projection": True,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# The OpenCLIP ViT-H/14 text tower that SD 2.x uses (23 of its 24 layers).
SD21_TEXT_ENCODER = {
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512,
}

# stabilityai/stable-diffusion-2-1-base vae/config.json and scheduler/scheduler_config.json (network-shaping
# fields). 2-1-base predicts the noise (epsilon); only the 768-px stable-diffusion-2-1 predicts v.
SD21_BASE_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "sample_size": 512,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD21_BASE_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False, "prediction_type": "epsilon",
}

# Salesforce/blip-image-captioning-base is BlipConfig's defaults (ViT-B/16 at 384 px, a 12-layer BERT decoder)
# over bert-base-uncased's 30,522 WordPiece tokens plus "[DEC]" and "[ENC]".
BERT_BASE_VOCAB_SIZE = 30522


def build_unet(config: dict):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config)


def build_text_encoder(config: dict):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**config))


def build_real_size_sd(folder: str | Path, seed: int = 0) -> Path:
    """SD 2.1-base (UNet, VAE, text encoder, tokenizer, PNDM scheduler) with random fp32 weights, in diffusers'
    folder layout."""
    from diffusers import AutoencoderKL, PNDMScheduler
    from transformers import CLIPTokenizer

    from datadream_core.models.tiny import save_sd_folder, write_clip_tokenizer

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(scratch, model_max_length=77))
    text_config = dict(SD21_TEXT_ENCODER, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    return save_sd_folder(folder, AutoencoderKL(**SD21_BASE_VAE), build_unet(SD21_BASE_UNET),
                          build_text_encoder(text_config), tokenizer, PNDMScheduler(**SD21_BASE_SCHEDULER))


def build_real_size_clip(folder: str | Path, name: str, quick_gelu: bool, seed: int = 0) -> Path:
    """open_clip's `name` with random weights as a `local-dir:` folder; `quick_gelu` as OpenAI's weights need."""
    import open_clip

    from datadream_core.models.tiny import save_clip_folder

    spec = dict(open_clip.get_model_config(name), quick_gelu=quick_gelu)
    torch.manual_seed(seed)
    return save_clip_folder(folder, open_clip.create_model(name, force_quick_gelu=quick_gelu), spec=spec)


def build_real_size_captioner(folder: str | Path, seed: int = 0) -> Path:
    """BLIP image-captioning-base with random weights, and a WordPiece vocabulary of bert-base-uncased's size (the
    tiny captioner's words, then placeholders), saved as the folder `synth.captions.load_captioner` reads."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from datadream_core.io import atomic_folder
    from datadream_core.models.tiny import TINY_CAPTION_WORDS, tiny_blip_tokenizer

    placeholders = [f"[unused{index}]" for index in range(BERT_BASE_VOCAB_SIZE - 5 - len(TINY_CAPTION_WORDS))]
    with atomic_folder(folder) as staging:
        with tempfile.TemporaryDirectory() as scratch:
            tokenizer = tiny_blip_tokenizer(scratch, words=[*TINY_CAPTION_WORDS, *placeholders], model_max_length=512)
            tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
            BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tokenizer).save_pretrained(staging)
        text = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.sep_token_id,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
        torch.manual_seed(seed)
        BlipForConditionalGeneration(BlipConfig(text_config=text)).save_pretrained(staging)
    return Path(folder)


def build_random_inception(path: str | Path, seed: int = 0) -> Path:
    """pytorch-fid's FID InceptionV3 with random weights, as the state-dict file `fid.inception_weights` names."""
    import pytorch_fid.inception as fid_inception
    import torchvision.models.inception

    from datadream_core.io import atomic_path

    torch.manual_seed(seed)
    # fid_inception_v3 builds the network, then loads the downloaded weights: keep the random ones instead
    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *args, **kwargs: {}), \
            mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict", lambda *args, **kwargs: None):
        model = fid_inception.fid_inception_v3()
    with atomic_path(Path(path)) as tmp:
        torch.save(model.state_dict(), tmp)
    return Path(path)


def build_real_size_models(sd: str | Path, clip: str | Path, disef_filter: str | Path, captioner: str | Path,
                           inception: str | Path, seed: int = 0) -> None:
    """Every model of the paper's setting at its real size with random weights: SD 2.1-base, the classifier's
    ViT-B/16 (QuickGELU, as OpenAI's weights), DISEF's ViT-H/14 filter, BLIP base and FID's Inception."""
    build_real_size_sd(sd, seed)
    build_real_size_clip(clip, "ViT-B-16", quick_gelu=True, seed=seed)
    build_real_size_clip(disef_filter, "ViT-H-14", quick_gelu=False, seed=seed)
    build_real_size_captioner(captioner, seed)
    build_random_inception(inception, seed)
    LOG.info("built the real-size models with random weights: %s", ", ".join(map(str, (sd, clip, disef_filter,
                                                                                      captioner, inception))))
