"""Snakemake adapter: generate one shard of the synthetic images of a chunk of classes."""

from dataclasses import asdict
from pathlib import Path

import torch

from datadream_core.chunks import chunk_classes
from datadream_core.config import section
from datadream_core.data.fewshot import read_fewshot
from datadream_core.data.table import prompts_of, read_classes
from datadream_core.io import read_json, write_csv
from datadream_core.jobs import start_job
from datadream_core.synth.sampler import SHARD_HEADER, ShardJob, file_fingerprint, fingerprint, run_shard, shard_range
from datadream_core.synth.text2img import AdapterSwitcher, SamplingSettings, load_text2img, text2img_renderer

REAL_SHOT_GENERATORS = ("issynth", "disef")

log = start_job(snakemake.log[0], snakemake.threads)
wildcards = snakemake.wildcards
config = snakemake.config
synth = config["synth"]
settings = section(SamplingSettings, synth)
classes = read_classes(snakemake.input.classes)
seed, shard = int(wildcards.seed), int(wildcards.shard)
start, stop = shard_range(snakemake.params.n_images, synth["shard_size"], shard)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
switcher = AdapterSwitcher(load_text2img(config["models"]["sd"]["path"], None, settings, device,
                                         revision=config["models"]["sd"]["revision"]))


def shard_dir(class_index):
    return Path(snakemake.params.synth_dir) / f"c{class_index:04d}" / f"shard{shard:03d}"


def text2img_rows():
    """sd and DataDream: text-to-image with the class prompt, each class's adapter fused in turn."""
    adapters = {}  # class index -> LoRA folder; empty for the unadapted model
    for marker in snakemake.input.loras:
        if marker.endswith(".json"):
            adapters.update({int(index): str(Path(path).parent) for index, path in read_json(marker)["adapters"].items()})
        else:
            adapters = dict.fromkeys(range(len(classes)), str(Path(marker).parent))
    render = text2img_renderer(switcher.pipe, settings)
    rows = []
    for class_index in chunk_classes(wildcards.chunk):
        adapter = adapters.get(class_index)
        switcher.use(adapter)
        identity = fingerprint(config["models"]["sd"]["path"], asdict(settings),
                               file_fingerprint(Path(adapter) / "pytorch_lora_weights.safetensors") if adapter else None)
        job = ShardJob(wildcards.generator, class_index, classes[class_index].prompt, seed, start, stop, identity)
        rows += run_shard(job, render, shard_dir(class_index), settings.batch_size)
    return SHARD_HEADER, rows


def clip_identity(clip_config):
    weights = Path(clip_config["name"]) / "open_clip_model.safetensors"
    return [clip_config["name"], clip_config["pretrained"], file_fingerprint(weights) if weights.is_file() else None]


def real_shot_rows():
    """issynth and disef: img2img from the class's K real shots (disef: captions + CLIP filter)."""
    from datadream_core.synth.img2img import (Img2ImgSettings, ProvenanceLog, ShotLatents, class_shots, load_img2img,
                                              strength_for_shots, with_provenance, write_shard_csv)

    shots_k = int(wildcards.shots)
    fewshot = read_fewshot(snakemake.input.fewshot[0], shots_k)
    pipe = load_img2img(switcher.pipe)
    latents = ShotLatents(pipe)
    base = [config["models"]["sd"]["path"], settings.scheduler, settings.mixed_precision]
    if wildcards.generator == "issynth":
        from datadream_core.synth.issynth import PROVENANCE_COLUMNS, issynth_renderer

        img_settings = Img2ImgSettings(settings.steps, settings.guidance_scale,
                                       strength_for_shots(synth["issynth_strength"], shots_k))
    else:
        from datadream_core.synth.captions import read_captions
        from datadream_core.synth.disef import PROVENANCE_COLUMNS, disef_renderer, filter_clip, load_clip_filter

        img_settings = Img2ImgSettings(
            synth["disef_steps"] or settings.steps,
            settings.guidance_scale if synth["disef_guidance_scale"] is None else synth["disef_guidance_scale"],
            synth["disef_strength"])
        captions = read_captions(snakemake.input.captions[0])
        clip_config = filter_clip(synth["disef_filter"], config["models"]["clip"])
        classify = load_clip_filter(clip_config, prompts_of(classes), device)
        base += [clip_identity(clip_config), synth["disef_max_attempts"]]
    log.info("%s K=%d: %s", wildcards.generator, shots_k, img_settings)
    rows = []
    for class_index in chunk_classes(wildcards.chunk):
        paths = class_shots(fewshot, class_index)
        prompt = classes[class_index].prompt
        extra = [captions[path] for path in paths] if wildcards.generator == "disef" else []
        identity = fingerprint(*base, asdict(img_settings), paths, extra)
        out_dir = shard_dir(class_index)
        provenance = ProvenanceLog(out_dir, identity)
        provenance.drop_unrecorded(range(start, stop))
        if wildcards.generator == "issynth":
            render = issynth_renderer(pipe, latents, paths, class_index, seed, img_settings, provenance.record)
        else:
            render = disef_renderer(pipe, latents, paths, captions, prompt, class_index, seed, img_settings, classify,
                                    synth["disef_max_attempts"], provenance.record)
        job = ShardJob(wildcards.generator, class_index, prompt, seed, start, stop, identity)
        class_rows = with_provenance(run_shard(job, render, out_dir, settings.batch_size), provenance, PROVENANCE_COLUMNS)
        write_shard_csv(out_dir, class_rows, PROVENANCE_COLUMNS)
        rows += class_rows
    return tuple(SHARD_HEADER) + tuple(PROVENANCE_COLUMNS), rows


header, rows = real_shot_rows() if wildcards.generator in REAL_SHOT_GENERATORS else text2img_rows()
write_csv(snakemake.output[0], header, rows)
if wildcards.generator == "disef":
    from datadream_core.synth.disef import attempt_summary

    for line in attempt_summary([dict(zip(header, row)) for row in rows], synth["disef_max_attempts"]):
        log.info(line)
log.info("%s %s shard %s: %d images ready", wildcards.generator, wildcards.chunk, wildcards.shard, len(rows))
