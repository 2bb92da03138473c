import numpy as np
import pytest
import torch
from PIL import Image

from datadream_core.dream import DreamSettings, Example, train_datadream
from datadream_core.data.miniworld import render_world
from datadream_core.io import read_csv, write_csv
from datadream_core.chunks import shard_count, shard_range
from datadream_core.synth.manifest import SHARD_HEADER, merge_manifest
from datadream_core.synth.sampler import ClassShard, make_shard, run_shard, staging_dir
from datadream_core.synth.text2img import (AdapterSwitcher, SamplingSettings, encode_class_prompt, load_text2img,
                                          text2img_renderer)

SETTINGS = SamplingSettings(steps=4, guidance_scale=2.0, batch_size=3)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def renderer(tiny_sd):
    return text2img_renderer(load_text2img(tiny_sd, SETTINGS, CPU), SETTINGS)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_shard_ranges():
    assert shard_count(10, None) == 1 and shard_range(10, None, 0) == (0, 10)
    assert shard_count(10, 4) == 3 and [shard_range(10, 4, j) for j in range(3)] == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="shard 3 does not exist"):
        shard_range(10, 4, 3)


def test_same_images_whatever_the_shard_and_batch_size(renderer, tmp_path):
    whole = make_shard(ClassShard("sd", 2, "a photo of a dax", 5, 0, 7), renderer, tmp_path / "whole", batch_size=4)
    make_shard(ClassShard("sd", 2, "a photo of a dax", 5, 0, 2), renderer, tmp_path / "a", batch_size=2)
    make_shard(ClassShard("sd", 2, "a photo of a dax", 5, 2, 7), renderer, tmp_path / "b", batch_size=5)
    assert len(whole) == 7
    for index in range(7):
        part = tmp_path / ("a" if index < 2 else "b") / f"{index:06d}.png"
        assert np.array_equal(_pixels(tmp_path / "whole" / f"{index:06d}.png"), _pixels(part)), index
    info = Image.open(tmp_path / "whole" / "000003.png").text
    assert info["prompt"] == "a photo of a dax" and info["seed"] == "5" and info["image_index"] == "3"


def test_images_differ_across_classes_seeds_and_indices(renderer, tmp_path):
    make_shard(ClassShard("sd", 0, "a photo", 0, 0, 2), renderer, tmp_path / "c0s0", batch_size=2)
    make_shard(ClassShard("sd", 1, "a photo", 0, 0, 1), renderer, tmp_path / "c1s0", batch_size=2)
    make_shard(ClassShard("sd", 0, "a photo", 1, 0, 1), renderer, tmp_path / "c0s1", batch_size=2)
    first = _pixels(tmp_path / "c0s0" / "000000.png")
    for other in (tmp_path / "c0s0" / "000001.png", tmp_path / "c1s0" / "000000.png", tmp_path / "c0s1" / "000000.png"):
        assert np.abs(first - _pixels(other)).mean() > 1.0, other


def test_killed_shard_keeps_finished_images(renderer, tmp_path):
    rendered = []

    def dies_after_first_batch(prompts, generators, indices):
        if rendered:
            raise KeyboardInterrupt("killed")
        rendered.append(list(indices))
        return renderer(prompts, generators, indices)

    job = ClassShard("datadream_dset", 1, "a photo of a wug", 0, 0, 5, identity="settings-a")
    out_dir, staging = tmp_path / "shard000", staging_dir(tmp_path / "shard000")
    with pytest.raises(KeyboardInterrupt):
        make_shard(job, dies_after_first_batch, out_dir, batch_size=2)
    assert sorted(p.name for p in staging.glob("*.png")) == ["000000.png", "000001.png"]
    assert not out_dir.exists()  # the declared output only ever holds a whole shard
    before = {p.name: p.stat().st_mtime_ns for p in staging.glob("*.png")}

    def counting(prompts, generators, indices):
        rendered.append(list(indices))
        return renderer(prompts, generators, indices)

    rows = make_shard(job, counting, out_dir, batch_size=2)
    assert rendered[1:] == [[2, 3], [4]]
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.glob("*.png") if p.name in before} == before
    assert [row[2] for row in rows] == [0, 1, 2, 3, 4]
    assert len(read_csv(out_dir / "shard.csv")) == 5 and not staging.exists()


def test_images_of_other_settings_are_made_again(renderer, tmp_path):
    """A staged image is kept only while the job's identity (settings, model, adapter, prompt) matches."""
    out_dir = tmp_path / "shard000"
    old = ClassShard("sd", 0, "a photo of a cat", 0, 0, 2, identity="cat")
    run_shard(old, renderer, out_dir, batch_size=2)  # staged, never published: a killed job
    rendered = []

    def counting(prompts, generators, indices):
        rendered.append((list(prompts), list(indices)))
        return renderer(prompts, generators, indices)

    new = ClassShard("sd", 0, "a photo of a tabby kitten", 0, 0, 2, identity="kitten")
    make_shard(new, counting, out_dir, batch_size=2)
    assert rendered == [(["a photo of a tabby kitten"] * 2, [0, 1])]
    assert {Image.open(path).text["prompt"] for path in out_dir.glob("*.png")} == {"a photo of a tabby kitten"}


def test_fused_adapter_matches_the_unfused_one(tiny_sd, tmp_path):
    rows = render_world(tmp_path / "world", "target", 32, {"train": 2}, seed=0)
    examples = [Example(path, "a photo of a dax") for path, c, _ in rows if c == 1]
    train_datadream(tiny_sd, examples, tmp_path / "lora", DreamSettings(rank=4, alpha=4, batch_size=2, epochs=5,
                                                                        warmup_steps=1, learning_rate=1e-2), seed=0)
    switcher = AdapterSwitcher(load_text2img(tiny_sd, SETTINGS, CPU))
    embeddings = switcher.use(str(tmp_path / "lora"), "a photo of a dax")
    unfused = load_text2img(tiny_sd, SETTINGS, CPU)
    unfused.load_lora_weights(str(tmp_path / "lora"))
    base = load_text2img(tiny_sd, SETTINGS, CPU)
    conditioning = [{"prompt_embeds": embeddings.positive, "negative_prompt_embeds": embeddings.negative},
                    {"prompt": ["a photo of a dax"]}, {"prompt": ["a photo of a dax"]}]
    outputs = [pipe(**given, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(1)).images
               for pipe, given in zip((switcher.pipe, unfused, base), conditioning)]
    assert np.abs(outputs[0] - outputs[1]).max() < 1e-4
    assert np.abs(outputs[0] - outputs[2]).max() > 1e-3


def _state(pipe) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value.clone() for name in ("unet", "text_encoder")
            for key, value in getattr(pipe, name).state_dict().items()}


def _fused_by_diffusers(tiny_sd, adapter: str, prompts) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The weights of diffusers' load_lora_weights + fuse_lora, and each prompt encoded by that pipeline."""
    pipe = load_text2img(tiny_sd, SETTINGS, CPU)
    pipe.load_lora_weights(adapter)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return _state(pipe), {prompt: encode_class_prompt(pipe, prompt).positive for prompt in prompts}


def test_adapter_switcher_gives_each_class_exactly_diffusers_fused_weights(tiny_sd, tmp_path):
    """Our direct merge (no PEFT layers) gives the UNet the very weights of diffusers' load_lora_weights +
    fuse_lora, and the prompt the very embeddings of its fused text encoder, which then holds its base weights
    again; switching back and forth leaves no residue."""
    rows = render_world(tmp_path / "world", "target", 32, {"train": 2}, seed=0)
    adapters = []
    for class_index in (0, 1):
        examples = [Example(path, "a photo of a thing") for path, c, _ in rows if c == class_index]
        adapters.append(str(tmp_path / f"lora{class_index}"))
        train_datadream(tiny_sd, examples, adapters[-1], DreamSettings(rank=4, alpha=4, batch_size=2, epochs=3,
                                                                       warmup_steps=1, learning_rate=1e-2), seed=class_index)
    thing, dax = "a photo of a thing", "a photo of a dax"
    switcher = AdapterSwitcher(load_text2img(tiny_sd, SETTINGS, CPU))
    base = _state(switcher.pipe)
    base_embeddings = {prompt: encode_class_prompt(switcher.pipe, prompt).positive for prompt in (thing, dax)}
    alone = [_fused_by_diffusers(tiny_sd, adapter, (thing, dax)) for adapter in adapters]
    # the third step is a class sharing the adapter (datadream_dset): a new prompt under the same merged UNet
    for adapter, prompt, (expected, embeddings) in [
            (adapters[0], thing, alone[0]), (adapters[1], thing, alone[1]), (adapters[1], dax, alone[1]),
            (adapters[0], thing, alone[0]), (None, dax, (base, base_embeddings))]:
        used = switcher.use(adapter, prompt)
        state = _state(switcher.pipe)
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[key], expected[key] if key.startswith("unet.") else base[key]) for key in state)
        assert torch.equal(used.positive, embeddings[prompt]), (adapter, prompt)
    assert any(not torch.equal(alone[0][0][key], alone[1][0][key]) for key in base)
    assert any(not torch.equal(alone[0][0][key], base[key]) for key in base if key.startswith("text_encoder."))
    assert not torch.equal(alone[0][1][thing], base_embeddings[thing])
    assert not torch.equal(alone[1][1][dax], alone[1][1][thing])
    with pytest.raises(ValueError, match="not of"):
        text2img_renderer(switcher.pipe, SETTINGS, used)(["another prompt"], [torch.Generator()], [0])


def test_manifest_merges_in_class_and_image_order(renderer, tmp_path):
    make_shard(ClassShard("sd", 1, "p1", 0, 2, 4), renderer, tmp_path / "c1b", batch_size=2)
    make_shard(ClassShard("sd", 1, "p1", 0, 0, 2), renderer, tmp_path / "c1a", batch_size=2)
    make_shard(ClassShard("sd", 0, "p0", 0, 0, 1), renderer, tmp_path / "c0", batch_size=2)
    count = merge_manifest([tmp_path / d for d in ("c1b", "c1a", "c0")], tmp_path / "manifest.csv")
    rows = read_csv(tmp_path / "manifest.csv")
    assert count == 5
    assert [(row["class_index"], row["image_index"]) for row in rows] == [("0", "0"), ("1", "0"), ("1", "1"), ("1", "2"), ("1", "3")]


def test_manifest_keeps_a_generators_own_columns(tmp_path):
    common = list(SHARD_HEADER)
    provenance = ["digest", "local:model", "world:data"]
    write_csv(tmp_path / "b/shard.csv", common + ["caption", "attempts"],
              [["b.png", 1, 0, 0, "p1", "disef", *provenance, "a dax", 3]])
    write_csv(tmp_path / "a/shard.csv", common + ["caption", "attempts"],
              [["a.png", 0, 0, 0, "p0", "disef", *provenance, "a wug", 1]])
    merge_manifest([tmp_path / "b", tmp_path / "a"], tmp_path / "manifest.csv")
    rows = read_csv(tmp_path / "manifest.csv")
    assert list(rows[0]) == common + ["caption", "attempts"]
    assert [row["model_identity"] for row in rows] == ["local:model", "local:model"]
    assert [(row["path"], row["caption"], row["attempts"]) for row in rows] == [("a.png", "a wug", "1"), ("b.png", "a dax", "3")]


def test_chunk_adapters_give_each_class_its_adapter_folders():
    from datadream_core.synth.generate import chunk_adapters

    dset = ["r/dream/dset/k2_seed0/all/pytorch_lora_weights.safetensors"]
    assert chunk_adapters("datadream_dset", [3, 4], dset) == {3: ["r/dream/dset/k2_seed0/all"]} | {
        4: ["r/dream/dset/k2_seed0/all"]}
    cls = [f"r/dream/cls/k2_seed0/c{index:04d}/w.safetensors" for index in (3, 4)]
    assert chunk_adapters("datadream_cls", [3, 4], cls) == {3: ["r/dream/cls/k2_seed0/c0003"],
                                                            4: ["r/dream/cls/k2_seed0/c0004"]}
    loft = [f"r/image/c{index:04d}/shot{rank:02d}/w.safetensors" for index in (3, 4) for rank in range(2)]
    assert chunk_adapters("loft", [3, 4], loft) == {3: ["r/image/c0003/shot00", "r/image/c0003/shot01"],
                                                    4: ["r/image/c0004/shot00", "r/image/c0004/shot01"]}
