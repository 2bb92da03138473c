import open_clip
import pytest
import torch

from datadream_core.models import ModelNotAvailable
from datadream_core.models.clip import load_clip
from datadream_core.models.sd import load_sd_parts, load_sd_pipeline


def test_tiny_sd_round_trips_through_the_loader(tiny_sd):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    parts = load_sd_parts(tiny_sd)
    assert isinstance(parts.unet, UNet2DConditionModel) and isinstance(parts.vae, AutoencoderKL)
    assert isinstance(parts.text_encoder, CLIPTextModel)
    assert parts.resolution == 32 and parts.vae_scale == 2
    assert parts.noise_scheduler.config.prediction_type == "v_prediction"
    assert any(name.endswith("attn2") for name, _ in parts.unet.named_modules())  # cross-attention
    assert not any(p.requires_grad for p in parts.unet.parameters())


def test_tokenizer_matches_open_clip_bpe(tiny_sd):
    parts = load_sd_parts(tiny_sd)
    prompts = ["a satellite photo of a AnnualCrop", "a flower photo of a lotus lotus"]
    ours = parts.tokenizer(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    reference = open_clip.tokenize(prompts, context_length=16)
    assert torch.equal(ours, reference)  # same BPE; both pad with id 0 ("!")
    assert parts.tokenizer.pad_token == "!"


def test_tiny_pipeline_generates(tiny_sd):
    pipe = load_sd_pipeline(tiny_sd, scheduler="DDIMScheduler")
    images = pipe(["a photo of a dax"], num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 32, 32, 3)


def test_tiny_clip_round_trips_through_the_loader(tiny_clip):
    clip = load_clip(tiny_clip)
    assert clip.image_size == 32
    tokens = clip.tokenize(["a photo of a dax"])
    assert tokens.shape == (1, 16)
    with torch.no_grad():
        features = clip.model.encode_text(tokens)
    assert features.shape == (1, 64)


def test_missing_models_fail_fast_with_a_clear_message(tmp_path):
    with pytest.raises(ModelNotAvailable, match="'someone/no-such-model' is not in the local model cache.*snakemake models"):
        load_sd_parts("someone/no-such-model")
    with pytest.raises(ModelNotAvailable, match="has no model_index.json"):
        load_sd_parts(str(tmp_path))
    with pytest.raises(ModelNotAvailable, match="'openai' is not in the local model cache \\(jobs run offline\\)"):
        load_clip("ViT-B-16", "openai")
    with pytest.raises(ModelNotAvailable, match="local CLIP folder .* does not exist"):
        load_clip(str(tmp_path / "nothing"))
    with pytest.raises(ModelNotAvailable, match="neither an open_clip model name nor a local folder"):
        load_clip("ViT-Q-99")
