"""One generation job: shard j of every class in a chunk, for one generator, K and seed.

`sd`, DataDream and LoFT render text-to-image with the class prompt (DataDream with the class's adapter fused
in, LoFT with a pair of the class's per-image adapters merged in per batch); `issynth` and `disef` render
img2img from the class's K real shots (disef also from their captions, keeping images that a CLIP filter classifies right). Each class's shard is made in its staging folder and
published whole (synth.sampler); its images carry an identity digest of everything that makes them, so a
resumed shard keeps only images made with the same settings, model, adapter, prompt and shots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from datadream_core.chunks import shard_range
from datadream_core.config import settings_dataclass
from datadream_core.data.fewshot import read_fewshot
from datadream_core.data.table import prompts_of, read_classes
from datadream_core.identity import digest, file_sha256
from datadream_core.io import LOG
from datadream_core.layout import LORA_FILE, REAL_SHOT_GENERATORS
from datadream_core.synth.loft import PairMixer, loft_renderer, pair_schedule
from datadream_core.synth.manifest import SHARD_HEADER
from datadream_core.synth.sampler import ClassShard, make_shard, publish_shard, run_shard, staging_dir
from datadream_core.synth.text2img import AdapterSwitcher, SamplingSettings, load_text2img, text2img_renderer


@dataclass(frozen=True)
class GenerationJob:
    """What a generation job makes (one shard of each class of a chunk) and from what; `settings` are its synth
    settings. Each class's shard is a ClassShard."""

    generator: str
    seed: int
    shots: int
    start: int
    stop: int
    shard_dirs: Mapping[int, str]  # class index -> the shard's final folder
    classes_csv: str
    settings: Mapping
    settings_digest: str  # of the settings that determine the images
    sd_path: str
    sd_revision: str | None
    sd_identity: str
    data_identity: str
    # class index -> LoRA folders: DataDream's one adapter, or LoFT's per-image adapters in rank order
    adapters: Mapping[int, Sequence[str]] = field(default_factory=dict)
    fewshot_csv: str | None = None  # issynth, disef
    captions_csv: str | None = None  # disef
    filter_clip: Mapping | None = None  # disef: {"name", "pretrained", "identity"} of the filtering CLIP


def chunk_adapters(generator: str, classes: Sequence[int], weights: Sequence[str]) -> dict[int, list[str]]:
    """A generation job's adapter folders per class, from its adapter weight files in class order: the one
    dataset-wide adapter for every class (datadream_dset), else one (datadream_cls) or K (loft) per class."""
    folders = [str(Path(path).parent) for path in weights]
    if generator == "datadream_dset":
        return dict.fromkeys(classes, folders)
    per_class = len(folders) // len(classes)
    return {index: folders[i * per_class:(i + 1) * per_class] for i, index in enumerate(classes)}


def run_generation_job(*, generator: str, seed: int, shots: int, classes: Sequence[int], shard: int,
                       shard_dirs: Sequence[str], classes_csv: str, settings: Mapping, provenance: Mapping[str, str],
                       sd_location: Mapping, adapter_weights: Sequence[str] = (), fewshot_csv: str | None = None,
                       captions_csv: str | None = None, filter_clip_location: Mapping | None = None,
                       filter_clip: Mapping | None = None) -> int:
    """Generate shard `shard` of every class of a chunk (`shard_dirs` in the order of `classes`); return the
    number of images. `provenance` holds the settings digest and the model and data identities;
    `filter_clip` (disef) adds the filter's identity to its location."""
    start, stop = shard_range(settings["n_images"], settings["shard_size"], shard)
    job = GenerationJob(
        generator=generator, seed=seed, shots=shots, start=start, stop=stop, shard_dirs=dict(zip(classes, shard_dirs)),
        classes_csv=classes_csv, settings=settings, settings_digest=provenance["settings_digest"],
        sd_path=sd_location["path"], sd_revision=sd_location["revision"], sd_identity=provenance["model_identity"],
        data_identity=provenance["data_identity"], adapters=chunk_adapters(generator, classes, adapter_weights),
        fewshot_csv=fewshot_csv, captions_csv=captions_csv,
        filter_clip={**filter_clip_location, **filter_clip} if filter_clip else None)
    header, rows = generate_shards(job, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if generator == "disef":
        from datadream_core.synth.disef import attempt_summary

        for line in attempt_summary([dict(zip(header, row)) for row in rows], settings["disef_max_attempts"]):
            LOG.info(line)
    LOG.info("%s classes %s shard %d: %d images ready", generator, list(classes), shard, len(rows))
    return len(rows)


def generate_shards(job: GenerationJob, device: torch.device) -> tuple[tuple[str, ...], list[tuple]]:
    """Make and publish every class's shard; return the header and rows of all of them."""
    sampling = settings_dataclass(SamplingSettings, job.settings)
    switcher = AdapterSwitcher(load_text2img(job.sd_path, sampling, device, revision=job.sd_revision))
    if job.generator in REAL_SHOT_GENERATORS:
        return _img2img_shards(job, switcher.pipe, sampling, device)
    return text2img_shards(job, switcher, sampling)


def _provenance_columns(job: GenerationJob, model_identity: str) -> tuple[str, str, str]:
    return job.settings_digest, model_identity, job.data_identity


def text2img_shards(job: GenerationJob, switcher: AdapterSwitcher, sampling: SamplingSettings):
    classes = read_classes(job.classes_csv)
    mixer = None
    if job.generator == "loft":
        mixer = PairMixer(switcher.pipe, job.settings["loft_interpolation_weight"])
    rows = []
    for class_index, out_dir in sorted(job.shard_dirs.items()):
        adapters = list(job.adapters.get(class_index, ()))
        if job.generator != "sd" and not adapters:
            raise ValueError(f"{job.generator}: no adapter for class {class_index}")
        prompt = classes[class_index].prompt
        if mixer is None:
            class_render = text2img_renderer(switcher.pipe, sampling, switcher.use(adapters[0] if adapters else None,
                                                                                   prompt))
        else:
            # per-image adapters may change the text encoder too, so each batch encodes its prompts under its pairs
            mixer.load(adapters)
            class_render = loft_renderer(text2img_renderer(switcher.pipe, sampling), mixer,
                                         pair_schedule(len(adapters), job.seed, class_index))
        digests = "+".join(file_sha256(Path(adapter) / LORA_FILE)[:16] for adapter in adapters)
        model = job.sd_identity + (f"+lora:{digests}" if adapters else "")
        shard = ClassShard(job.generator, class_index, prompt, job.seed, job.start, job.stop,
                           digest(job.settings_digest, model, prompt), _provenance_columns(job, model))
        rows += make_shard(shard, class_render, out_dir, sampling.batch_size)
    return SHARD_HEADER, rows


def _img2img_shards(job: GenerationJob, base_pipe, sampling: SamplingSettings, device: torch.device):
    from datadream_core.synth.img2img import (Img2ImgSettings, ProvenanceLog, ShotLatents, class_shots, load_img2img,
                                              strength_for_shots, with_provenance)

    settings = job.settings
    classes = read_classes(job.classes_csv)
    fewshot = read_fewshot(job.fewshot_csv, job.shots)
    pipe = load_img2img(base_pipe)
    latents = ShotLatents(pipe)
    if job.generator == "issynth":
        from datadream_core.synth.issynth import PROVENANCE_COLUMNS, issynth_renderer

        img_settings = Img2ImgSettings(sampling.steps, sampling.guidance_scale,
                                       strength_for_shots(settings["issynth_strength"], job.shots))
        captions: Mapping[str, str] = {}
        model = job.sd_identity
    else:
        from datadream_core.synth.captions import read_captions
        from datadream_core.synth.disef import PROVENANCE_COLUMNS, disef_renderer, load_clip_filter

        img_settings = Img2ImgSettings(
            settings["disef_steps"] or sampling.steps,
            sampling.guidance_scale if settings["disef_guidance_scale"] is None else settings["disef_guidance_scale"],
            settings["disef_strength"])
        captions = read_captions(job.captions_csv)
        classify = load_clip_filter(job.filter_clip, prompts_of(classes), device)
        model = f"{job.sd_identity}+filter:{job.filter_clip['identity']}"
    LOG.info("%s K=%d: %s", job.generator, job.shots, img_settings)
    rows = []
    for class_index, out_dir in sorted(job.shard_dirs.items()):
        paths = class_shots(fewshot, class_index)
        prompt = classes[class_index].prompt
        shot_captions = [captions[path] for path in paths] if job.generator == "disef" else []
        identity = digest(job.settings_digest, model, prompt, asdict(img_settings), paths, shot_captions)
        provenance = ProvenanceLog(staging_dir(out_dir), identity)
        provenance.drop_unrecorded(range(job.start, job.stop))
        if job.generator == "issynth":
            render = issynth_renderer(pipe, latents, paths, class_index, job.seed, img_settings, provenance.record)
        else:
            render = disef_renderer(pipe, latents, paths, captions, prompt, class_index, job.seed, img_settings,
                                    classify, settings["disef_max_attempts"], provenance.record)
        shard = ClassShard(job.generator, class_index, prompt, job.seed, job.start, job.stop, identity,
                           _provenance_columns(job, model))
        class_rows = with_provenance(run_shard(shard, render, out_dir, sampling.batch_size), provenance,
                                     PROVENANCE_COLUMNS)
        publish_shard(out_dir, tuple(SHARD_HEADER) + tuple(PROVENANCE_COLUMNS), class_rows)
        rows += class_rows
    return tuple(SHARD_HEADER) + tuple(PROVENANCE_COLUMNS), rows
