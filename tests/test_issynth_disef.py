"""IsSynth and DISEF: img2img from the real shots, captions of other shots, the CLIP filter and its budget."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datadream_core.data.fewshot import Shot
from datadream_core.data.miniworld import render_world
from datadream_core.io import read_csv, read_json
from datadream_core.models import ModelNotAvailable
from datadream_core.synth.captions import caption_shots, load_captioner, read_captions
from datadream_core.synth.disef import PROVENANCE_COLUMNS, ClipFilter, disef_plan, disef_prompt, disef_renderer
from datadream_core.synth.img2img import (Img2ImgSettings, ProvenanceLog, ShotLatents, attempt_generator, class_shots,
                                          img2img_images, load_img2img, runnable_strength, strength_for_shots,
                                          with_provenance)
from datadream_core.synth.issynth import issynth_renderer, issynth_source
from datadream_core.synth.manifest import SHARD_HEADER
from datadream_core.synth.sampler import ClassShard, image_generator, publish_shard, run_shard, staging_dir
from datadream_core.synth.text2img import SamplingSettings, load_text2img

STEPS = 8
CPU = torch.device("cpu")
PROMPTS = ["a photo of a red circle", "a photo of a blue square", "a photo of a red star"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Bit-equal images across batch sizes need one CPU thread: with several, a batch of 1 and a batch of 4
    split their reductions differently and a rare pixel can differ by one level."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Three shots (ranks 0-2) of each of three miniworld classes."""
    rows = render_world(tmp_path_factory.mktemp("world"), "target", 32, {"train": 3}, seed=0, num_classes=3)
    return [Shot(path, class_index, int(Path(path).stem)) for path, class_index, _ in rows]


@pytest.fixture(scope="module")
def class_paths(shots):
    return {c: class_shots(shots, c) for c in range(3)}


@pytest.fixture(scope="module")
def latents(tiny_sd, class_paths):
    pipe = load_img2img(load_text2img(tiny_sd, SamplingSettings(steps=STEPS), CPU))
    # Calibrate the random VAE's scaling factor the way SD's was chosen (unit-variance latents): with
    # 0.18215 the tiny VAE's latents have std ~0.04 and even the smallest noise level would swamp them.
    raw = ShotLatents(pipe)
    std = torch.cat([raw(path) for paths in class_paths.values() for path in paths]).std().item()
    pipe.vae.register_to_config(scaling_factor=pipe.vae.config.scaling_factor / std)
    return ShotLatents(pipe)


@pytest.fixture(scope="module")
def img2img(latents):
    return latents.pipe


def _pixels(image) -> np.ndarray:
    return np.asarray(image if isinstance(image, Image.Image) else Image.open(image), dtype=np.float32)


def _same_image(a, b) -> bool:
    """Equal up to float rounding: UNet and VAE results differ by ~1e-6 between batch sizes, which can move
    a rare pixel by one level (the text-to-image generators share this)."""
    diff = np.abs(_pixels(a) - _pixels(b))
    return diff.max() <= 1 and (diff > 0).mean() < 0.01


def _distance(a, b) -> float:
    return float(np.abs(_pixels(a) - _pixels(b)).mean())


def _round_trip(latents, path) -> Image.Image:
    """The shot through the VAE alone, computed here independently of img2img_images."""
    pipe = latents.pipe
    pixels = pipe.image_processor.preprocess(latents.image(path), height=latents.size, width=latents.size)
    with torch.inference_mode():
        decoded = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mode()).sample
    return pipe.image_processor.postprocess(decoded, output_type="pil")[0]


# --- IsSynth --------------------------------------------------------------------------------------------


def test_strength_table_takes_the_largest_key_not_above_k():
    table = {1: 0.5, 2: 0.4, 4: 0.35, 8: 0.2, 16: 0.15}
    assert [strength_for_shots(table, k) for k in (1, 2, 3, 4, 7, 8, 15, 16, 64)] == \
        [0.5, 0.4, 0.4, 0.35, 0.35, 0.2, 0.2, 0.15, 0.15]
    assert strength_for_shots({"4": 0.3, "16": 0.1}, 2) == 0.3  # below every key: the smallest key's
    assert strength_for_shots({"4": 0.3, "16": 0.1}, 16) == 0.1  # YAML may give string keys
    assert runnable_strength(8, 0.0) == 0.0 and runnable_strength(8, 0.5) == 0.5
    assert int(8 * runnable_strength(8, 0.05)) == 1  # diffusers would run no step: raised to one


def test_issynth_source_is_a_seeded_choice_among_the_class_shots(class_paths):
    paths = class_paths[1]
    sources = [issynth_source(paths, 3, 1, i) for i in range(60)]
    assert set(sources) == set(paths)
    assert sources == [issynth_source(paths, 3, 1, i) for i in range(60)]
    assert sources != [issynth_source(paths, 4, 1, i) for i in range(60)]


def test_img2img_starts_from_the_chosen_real_shot(latents, img2img, class_paths):
    paths = class_paths[0]
    trips = {path: _round_trip(latents, path) for path in paths}
    indices = list(range(6))
    by_strength = {}
    for strength in (0.0, 1 / STEPS, 0.25, 1.0):
        recorded = {}
        render = issynth_renderer(img2img, latents, paths, 0, 7, Img2ImgSettings(STEPS, 2.0, strength), recorded.update)
        images = render([PROMPTS[0]] * 6, [image_generator(7, 0, i) for i in indices], indices)
        assert [recorded[i]["source_shot"] for i in indices] == [issynth_source(paths, 7, 0, i) for i in indices]
        by_strength[strength] = [(image, recorded[i]["source_shot"]) for i, image in zip(indices, images)]
    for image, source in by_strength[0.0]:  # strength 0: exactly the shot through the VAE
        assert np.abs(_pixels(image) - _pixels(trips[source])).max() <= 1
    mean = {s: np.mean([_distance(image, trips[source]) for image, source in pairs]) for s, pairs in by_strength.items()}
    others = np.mean([_distance(image, trips[other]) for image, source in by_strength[1 / STEPS]
                      for other in paths if other != source])
    assert mean[1 / STEPS] < 5 and others > 15, (mean, others)  # one step of noise: still the chosen shot
    assert mean[1 / STEPS] + 5 < mean[0.25] and mean[0.25] + 5 < mean[1.0], mean  # more noise moves further away


def test_issynth_same_images_whatever_the_shard_and_batch_size(latents, img2img, class_paths, tmp_path):
    settings = Img2ImgSettings(STEPS, 2.0, 0.5)

    def shard(name, begin, end, batch):
        log = ProvenanceLog(staging_dir(tmp_path / name), "fp")
        render = issynth_renderer(img2img, latents, class_paths[2], 2, 5, settings, log.record)
        rows = run_shard(ClassShard("issynth", 2, PROMPTS[2], 5, begin, end, "fp"), render, tmp_path / name, batch)
        rows = with_provenance(rows, log, ("source_shot",))
        publish_shard(tmp_path / name, SHARD_HEADER + ("source_shot",), rows)
        return rows

    whole = shard("whole", 0, 5, 4)
    parts = shard("a", 0, 2, 1) + shard("b", 2, 5, 2)
    assert [row[-1] for row in whole] == [row[-1] for row in parts]
    for i in range(5):
        part = tmp_path / ("a" if i < 2 else "b") / f"{i:06d}.png"
        assert _same_image(tmp_path / "whole" / f"{i:06d}.png", part), i


# --- DISEF ----------------------------------------------------------------------------------------------


def test_disef_caption_comes_from_another_shot_of_the_same_class():
    paths = [f"/shots/c1/{rank}.png" for rank in range(4)]
    plans = [disef_plan(paths, 0, 1, i, attempt) for i in range(150) for attempt in range(2)]
    assert all(plan.caption_shot != plan.source_shot for plan in plans)
    assert all(plan.caption_shot in paths and plan.source_shot in paths for plan in plans)
    assert {(plan.source_shot, plan.caption_shot) for plan in plans} == {(a, b) for a in paths for b in paths if a != b}
    assert disef_plan(paths, 0, 1, 5, 0) == disef_plan(paths, 0, 1, 5, 0) != disef_plan(paths, 0, 1, 5, 1)
    assert disef_plan(paths[:1], 0, 1, 5).caption_shot == paths[0]  # K = 1: no other shot exists
    assert disef_prompt("a photo of a dax", " red on blue ") == "a photo of a dax, red on blue"
    assert disef_prompt("a photo of a dax", "") == "a photo of a dax"


class PromptSpy:
    """The img2img pipeline, recording the prompts it is called with."""

    def __init__(self, pipe):
        self.pipe, self.prompts = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, prompt, **kwargs):
        self.prompts += list(prompt)
        return self.pipe(prompt=prompt, **kwargs)


def test_disef_prompts_use_the_recorded_caption(latents, img2img, class_paths, shots):
    captions = {shot.path: f"caption of shot {shot.class_index}-{shot.rank}" for shot in shots}
    spy, recorded = PromptSpy(img2img), {}
    render = disef_renderer(spy, latents, class_paths[1], captions, PROMPTS[1], 1, 0, Img2ImgSettings(STEPS, 2.0, 0.5),
                            lambda images: [1] * len(images), 3, recorded.update)
    render([PROMPTS[1]] * 6, [image_generator(0, 1, i) for i in range(6)], list(range(6)))
    assert len(spy.prompts) == 6  # all accepted at the first attempt
    for i, prompt in enumerate(spy.prompts):
        entry = recorded[i]
        assert entry["caption_shot"] in class_paths[1] and entry["caption_shot"] != entry["source_shot"]
        assert entry["caption"] == captions[entry["caption_shot"]]
        assert prompt == f"{PROMPTS[1]}, {entry['caption']}"
        assert (entry["attempts"], entry["rejected"], entry["filter_passed"]) == (1, 0, 1)


def test_disef_retry_budget_is_honoured(latents, img2img, class_paths, shots):
    captions = {shot.path: "plain" for shot in shots}
    settings = Img2ImgSettings(STEPS, 2.0, 0.5)
    calls = []

    def never(images):
        calls.append(len(images))
        return [0] * len(images)  # always the wrong class for class 2

    recorded = {}
    render = disef_renderer(img2img, latents, class_paths[2], captions, PROMPTS[2], 2, 0, settings, never, 4,
                            recorded.update)
    images = render([PROMPTS[2]] * 3, [image_generator(0, 2, i) for i in range(3)], [0, 1, 2])
    assert calls == [3, 3, 3, 3]  # four attempts for every image, no more
    assert all((recorded[i]["attempts"], recorded[i]["rejected"], recorded[i]["filter_passed"]) == (4, 4, 0)
               for i in range(3))
    # the last attempt is the one kept: redo attempt 3 of image 1 on its own
    plan = disef_plan(class_paths[2], 0, 2, 1, 3)
    alone = img2img_images(img2img, latents, [plan.source_shot], [disef_prompt(PROMPTS[2], "plain")],
                           [attempt_generator(0, 2, 1, 3)], settings)[0]
    assert _same_image(images[1], alone)

    answers = iter([[0, 2, 0], [2, 2]])  # image 1 accepted at once, images 0 and 2 at the second attempt
    recorded.clear()
    render = disef_renderer(img2img, latents, class_paths[2], captions, PROMPTS[2], 2, 0, settings,
                            lambda images: next(answers), 4, recorded.update)
    render([PROMPTS[2]] * 3, [image_generator(0, 2, i) for i in range(3)], [0, 1, 2])
    assert [(recorded[i]["attempts"], recorded[i]["rejected"], recorded[i]["filter_passed"]) for i in range(3)] == \
        [(2, 1, 1), (1, 0, 1), (2, 1, 1)]


def test_clip_filter_rejects_what_clip_misclassifies(tiny_clip, latents, img2img, class_paths, shots):
    import open_clip

    from datadream_core.models.clip import load_clip

    clip = load_clip(tiny_clip, "")
    clip_filter = ClipFilter(clip, PROMPTS)
    captions = {shot.path: "plain" for shot in shots}
    settings = Img2ImgSettings(STEPS, 2.0, 0.75)
    outcomes = []
    for class_index in range(3):
        recorded = {}
        render = disef_renderer(img2img, latents, class_paths[class_index], captions, PROMPTS[class_index], class_index,
                                0, settings, clip_filter, 3, recorded.update)
        images = render([PROMPTS[class_index]] * 4, [image_generator(0, class_index, i) for i in range(4)], range(4))
        predicted = clip_filter.predict(images)
        for i, image in enumerate(images):
            entry = recorded[i]
            assert entry["filter_passed"] == int(predicted[i] == class_index)
            assert entry["rejected"] == entry["attempts"] - entry["filter_passed"]
            assert entry["attempts"] == 3 or entry["filter_passed"] == 1
            outcomes.append(entry["filter_passed"])
    assert 0 < sum(outcomes) < len(outcomes)  # the filter both kept and rejected images here
    # the filter is plain zero-shot CLIP over the class prompts
    preprocess = open_clip.image_transform(clip.image_size, is_train=False, mean=clip.mean, std=clip.std)
    with torch.no_grad():
        text = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenize(PROMPTS)), dim=-1)
        image = torch.nn.functional.normalize(clip.model.encode_image(preprocess(images[0])[None]), dim=-1)
    assert clip_filter.predict(images[:1]) == (image @ text.T).argmax(dim=-1).tolist()


def test_disef_deterministic_across_shards_and_resumes_after_a_kill(tiny_clip, latents, img2img, class_paths, shots,
                                                                     tmp_path):
    from datadream_core.models.clip import load_clip

    captions = {shot.path: f"caption {shot.rank}" for shot in shots}
    clip_filter = ClipFilter(load_clip(tiny_clip, ""), PROMPTS)
    settings = Img2ImgSettings(STEPS, 2.0, 0.75)

    def make(folder, wrap=lambda render: render):
        log = ProvenanceLog(staging_dir(tmp_path / folder), "fp")
        render = disef_renderer(img2img, latents, class_paths[1], captions, PROMPTS[1], 1, 0, settings, clip_filter,
                                3, log.record)
        return log, wrap(render)

    def shard(folder, begin, end, batch, wrap=lambda render: render):
        log, render = make(folder, wrap)
        log.drop_unrecorded(range(begin, end))
        rows = run_shard(ClassShard("disef", 1, PROMPTS[1], 0, begin, end, "fp"), render, tmp_path / folder, batch)
        rows = with_provenance(rows, log, PROVENANCE_COLUMNS)
        publish_shard(tmp_path / folder, SHARD_HEADER + PROVENANCE_COLUMNS, rows)
        return rows

    whole = shard("whole", 0, 5, 5)
    parts = shard("a", 0, 2, 2) + shard("b", 2, 5, 1)
    assert [row[6:] for row in whole] == [row[6:] for row in parts]
    assert any(int(row[-3]) > 1 for row in whole)  # some images needed retries, in differently sized batches
    for i in range(5):
        part = tmp_path / ("a" if i < 2 else "b") / f"{i:06d}.png"
        assert _same_image(tmp_path / "whole" / f"{i:06d}.png", part), i

    rendered = []

    def dies_after_first_batch(render):
        def wrapped(prompts, generators, indices):
            if rendered:
                raise KeyboardInterrupt("killed")
            rendered.append(list(indices))
            return render(prompts, generators, indices)
        return wrapped

    with pytest.raises(KeyboardInterrupt):
        shard("killed", 0, 5, 2, dies_after_first_batch)
    staged = staging_dir(tmp_path / "killed")
    assert sorted(p.name for p in staged.glob("*.png")) == ["000000.png", "000001.png"]
    (staged / "000001.png").unlink()
    Image.open(tmp_path / "whole" / "000001.png").save(staged / "000001.png")  # a foreign image
    assert set(read_json(staged / ProvenanceLog.FILE)["images"]) == {"0", "1"}
    # image 1 replaced by a foreign file without our identity: it is made again, image 0 is kept

    def counting(render):
        def wrapped(prompts, generators, indices):
            rendered.append(list(indices))
            return render(prompts, generators, indices)
        return wrapped

    rows = shard("killed", 0, 5, 2, counting)
    assert rendered[1:] == [[1, 2], [3, 4]]
    assert [row[6:] for row in rows] == [row[6:] for row in whole]
    for i in range(5):
        assert _same_image(tmp_path / "whole" / f"{i:06d}.png", tmp_path / "killed" / f"{i:06d}.png"), i
    csv_rows = read_csv(tmp_path / "killed" / "shard.csv")
    assert [row["attempts"] for row in csv_rows] == [str(row[-3]) for row in whole]
    assert set(PROVENANCE_COLUMNS) <= set(csv_rows[0])


def test_unrecorded_images_are_made_again(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "000000.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "000001.png")
    log = ProvenanceLog(tmp_path, "fp")
    log.record({0: {"source_shot": "x"}})
    assert ProvenanceLog(tmp_path, "fp").drop_unrecorded([0, 1]) == [1]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["000000.png"]
    assert ProvenanceLog(tmp_path, "other").images == {}  # another identity: every entry is stale


# --- captions -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory):
    from datadream_core.models.tiny import build_tiny_captioner

    return str(build_tiny_captioner(tmp_path_factory.mktemp("models") / "tiny_captioner", seed=0))


def test_captions_are_cached_once_per_shot(tiny_captioner, shots, tmp_path):
    k2 = [shot for shot in shots if shot.rank < 2]
    assert caption_shots(k2, tmp_path / "k2.csv", tiny_captioner, batch_size=4, max_new_tokens=6) == len(k2)
    rows = read_csv(tmp_path / "k2.csv")
    assert [(row["path"], row["class_index"]) for row in rows] == \
        [(shot.path, str(shot.class_index)) for shot in sorted(k2, key=lambda s: (s.class_index, s.rank))]
    captions = read_captions(tmp_path / "k2.csv")
    assert len(set(captions.values())) > 1  # the tiny captioner looks at the image
    assert all(len(caption.split()) <= 6 for caption in captions.values())


def test_missing_captioner_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    begin = time.monotonic()
    with pytest.raises(ModelNotAvailable, match="nobody/no-such-blip.*jobs run offline.*snakemake models"):
        load_captioner("nobody/no-such-blip")
    assert time.monotonic() - begin < 30
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        load_captioner(str(tmp_path))
