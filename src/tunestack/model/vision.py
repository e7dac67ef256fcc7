"""Vision- and audio-language models: how to tell one, its processor, and which of its parts an adapter or freezing
reaches.

A model whose config has a `vision_config` (Qwen2-VL, LLaVA, Idefics3 / SmolVLM, Gemma 3, ...) or an `audio_config`
(Qwen2-Audio) loads through `AutoModelForMultimodalLM` and brings an `AutoProcessor`, whose chat template and image
or audio processing are the source of truth for its inputs. Its modules fall into three parts: the encoder (the
vision tower, or the audio tower, which the flags call "vision" too), the aligner (the projector or connector that
maps its features into the language model's embeddings) and the language model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunestack.errors import ConfigError, TunestackError

# Module-name fragments of each part, as the transformers classes name them.
VISION_TOWER = ("vision_tower", "vision_model", "visual", "image_encoder", "audio_tower")
ALIGNER = ("multi_modal_projector", "connector", "merger", "deepstack_merger_list", "mm_projector", "aligner")


def is_multimodal(path_or_config) -> bool:
    """Whether the model (a folder or a config object) has a vision (or audio) encoder."""
    if isinstance(path_or_config, str | Path):
        config_file = Path(path_or_config) / "config.json"
        if not config_file.is_file():
            return False
        config = json.loads(config_file.read_text())
        return "vision_config" in config or "audio_config" in config
    return any(getattr(path_or_config, key, None) is not None for key in ("vision_config", "audio_config"))


def media_kinds(processor) -> list[str]:
    """What the processor reads: "image" (an image processor), "audio" (a feature extractor), "video" (a video
    processor, or the Qwen2-VL family's torchvision-free video path)."""
    kinds = [kind for kind, reader in (("image", "image_processor"), ("audio", "feature_extractor"))
             if getattr(processor, reader, None) is not None]
    if getattr(processor, "video_processor", None) is not None or getattr(processor, "reads_video", False):
        kinds.append("video")
    return kinds


def video_inputs(processor, videos: list) -> dict:
    """The processor's keyword arguments for `videos` (media.VideoFrames, already sampled): as they are for the
    torchvision-free path, as frame arrays with their sampling for transformers' own video processors."""
    if getattr(processor, "reads_video", False):
        return {"videos": videos}
    return {"videos": [video.frames for video in videos], "do_sample_frames": False,
            "video_metadata": [{"total_num_frames": len(video), "fps": video.fps,
                                "frames_indices": list(range(len(video)))} for video in videos]}


def has_3d_positions(path) -> bool:
    """Whether the model's rotary positions are 3-D (M-RoPE: Qwen2-VL and its successors), which the model computes
    from a whole row's image grid, so that a packed row's restarting 1-D positions cannot stand in for them."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return False

    def has_key(node) -> bool:
        if isinstance(node, dict):
            return "mrope_section" in node or any(has_key(value) for value in node.values())
        return isinstance(node, list) and any(has_key(value) for value in node)

    return has_key(json.loads(config_file.read_text()))


def load_processor(path, trust_remote_code: bool = False, chat_template: str | None = None,
                   min_pixels: int | None = None, max_pixels: int | None = None, fps: float | None = None,
                   max_frames: int | None = None):
    """The model's `AutoProcessor`, its tokenizer padded on the right and holding the processor's chat template
    (so text-only conversations render exactly as image ones do); --min_pixels / --max_pixels set its image
    processor's pixel budget, which only budgeting processors have; --fps / --max_frames how videos are sampled
    (`processor.video_sampling`, saved with a run's processor)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ImportError, OSError, ValueError) as exc:  # a video processor's config says torchvision in any of them
        if "torchvision" in str(exc).lower():
            processor = _without_video_processor(path, trust_remote_code, exc)
        elif isinstance(exc, ImportError):
            raise
        else:
            raise TunestackError(f"could not load the processor of the vision-language model in {path}: {exc}") \
                from exc
    if chat_template:
        processor.chat_template = chat_template
    if min_pixels is not None or max_pixels is not None:
        _set_pixel_budget(processor, path, min_pixels, max_pixels)
    processor.video_sampling = _video_sampling(path, fps, max_frames)
    if not getattr(processor, "chat_template", None):
        raise TunestackError(f"the processor in {path} has no chat template; pass --chat_template FILE.jinja")
    from tunestack.model.load import set_pad_token

    tokenizer = processor.tokenizer
    tokenizer.chat_template = processor.chat_template
    if tokenizer.pad_token is None:
        set_pad_token(tokenizer)
    tokenizer.padding_side = "right"
    return processor


def _set_pixel_budget(processor, path, min_pixels: int | None, max_pixels: int | None) -> None:
    """Qwen2-VL-family image processors resize each image to a multiple of their patch size holding between
    `size.shortest_edge` and `size.longest_edge` pixels (their min_pixels and max_pixels); others resize to fixed
    sizes and refuse the flags."""
    import dataclasses

    images = getattr(processor, "image_processor", None)
    size = getattr(images, "size", None)
    if not (hasattr(images, "merge_size") and getattr(size, "shortest_edge", None) and
            getattr(size, "longest_edge", None)):
        raise ConfigError([f"--min_pixels / --max_pixels: the {type(images).__name__} of {path} resizes images to "
                           "its own sizes, not to a pixel budget; drop the flags"])
    low = size.shortest_edge if min_pixels is None else min_pixels
    high = size.longest_edge if max_pixels is None else max_pixels
    if low > high:
        raise ConfigError([f"--min_pixels {low} is above --max_pixels {high}; the budget needs min <= max"])
    images.size = dataclasses.replace(size, shortest_edge=low, longest_edge=high)


def _video_sampling(path, fps: float | None, max_frames: int | None) -> dict:
    """How videos are sampled: the flags, else what the folder's video_preprocessor_config.json says, else
    media.VIDEO_FPS and media.VIDEO_MAX_FRAMES."""
    from tunestack.media import VIDEO_FPS, VIDEO_MAX_FRAMES

    config = Path(path) / "video_preprocessor_config.json"
    saved = json.loads(config.read_text()) if config.is_file() else {}
    return {"fps": float(fps or saved.get("fps") or VIDEO_FPS),
            "max_frames": int(max_frames or saved.get("max_frames") or VIDEO_MAX_FRAMES)}


def _without_video_processor(path, trust_remote_code: bool, why: Exception):
    """The family's processor without the video processor that needs torchvision (Qwen2-VL's and its successors' in
    transformers 5): the image processor is the PIL one transformers falls back to, the tokenizer and chat template
    are the model's own. Videos go through the image processor frame by frame (model/video.py) for Qwen2-VL,
    Qwen2.5-VL and Qwen3-VL; for another family a video fails with the reason."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    from tunestack.model.video import takes_video, time_stamps, video_budget, video_features

    record = Path(path) / "processor_config.json"  # what a run saves beside its adapter, which has no config.json
    named = json.loads(record.read_text()).get("processor_class") if record.is_file() else None
    family = getattr(transformers, named, None) if named else None
    if family is None:
        family = PROCESSOR_MAPPING.get(type(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)),
                                       None)
    if family is None or "video_processor" not in family.get_attributes():
        raise why

    time_aware = family.__name__ == "Qwen2_5_VLProcessor"  # its positions read each video's seconds per patch
    stamped = family.__name__ == "Qwen3VLProcessor"  # its prompt writes each time step's time stamp
    video_family = family.__name__ in ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor")

    class WithoutTorchvision(family):
        """`family` with no video processor (a None the class check lets through); videos through the image
        processor where the family's patches allow it."""

        def check_argument_for_proper_class(self, attribute_name, arg):
            if attribute_name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(attribute_name, arg)

        def validate_inputs(self, *args, videos=None, **kwargs):
            frames = None if videos is None else [getattr(video, "frames", video) for video in videos]
            return super().validate_inputs(*args, videos=frames, **kwargs)

        def _process_videos(self, videos, **kwargs):
            """Pixel patches and grids of `videos` (media.VideoFrames), and each video's placeholder expanded to
            one token per merged patch, as the family's processor expands it."""
            if not (video_family and takes_video(self.image_processor)):
                raise TunestackError(f"videos need {family.__name__}'s video processor, which needs torchvision: "
                                     f"{str(why).strip().splitlines()[0]}")
            features = video_features(self.image_processor, videos, self.video_budget, whole_video=stamped)
            merged = self.image_processor.merge_size ** 2
            replacements = [self.video_token * (int(grid.prod()) // merged) for grid in features["video_grid_thw"]]
            if stamped:  # each time step: "<t seconds>" and its tokens between vision start and end
                step = self.image_processor.temporal_patch_size
                replacements = [
                    "".join(f"<{stamp:.1f} seconds>" + self.vision_start_token
                            + self.video_token * (int(grid[1:].prod()) // merged) + self.vision_end_token
                            for stamp in time_stamps(video, step))
                    for video, grid in zip(videos, features["video_grid_thw"])]
            if time_aware:
                step = self.image_processor.temporal_patch_size
                features["second_per_grid_ts"] = torch.tensor([step / video.fps for video in videos])
            return features, replacements

        def save_pretrained(self, save_directory, **kwargs):
            """What loading it back needs (it loads through this function again): image processor, tokenizer, chat
            template, and the video budget and sampling in a video_preprocessor_config.json as transformers writes
            one."""
            self.image_processor.save_pretrained(save_directory)
            self.tokenizer.save_pretrained(save_directory)
            (Path(save_directory) / "processor_config.json").write_text(  # AutoProcessor then names the family
                json.dumps({"processor_class": family.__name__}, indent=2) + "\n")
            if self.chat_template:
                (Path(save_directory) / "chat_template.jinja").write_text(self.chat_template)
            if video_family:
                images = self.image_processor
                video = {"video_processor_type": "Qwen3VLVideoProcessor" if stamped else "Qwen2VLVideoProcessor",
                         "size": self.video_budget, "patch_size": images.patch_size,
                         "temporal_patch_size": images.temporal_patch_size, "merge_size": images.merge_size,
                         "image_mean": list(images.image_mean), "image_std": list(images.image_std),
                         **getattr(self, "video_sampling", {})}
                (Path(save_directory) / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2)
                                                                                     + "\n")
            return [str(save_directory)]

    WithoutTorchvision.__name__ = WithoutTorchvision.__qualname__ = family.__name__
    template = Path(path) / "chat_template.jinja"
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    processor = WithoutTorchvision(image_processor=AutoImageProcessor.from_pretrained(path,
                                                                             trust_remote_code=trust_remote_code),
                           tokenizer=tokenizer, video_processor=None,
                           chat_template=template.read_text() if template.is_file() else tokenizer.chat_template)
    processor.video_budget = video_budget(path, whole_video=stamped)
    processor.reads_video = video_family and takes_video(processor.image_processor)
    return processor


def part_of(name: str) -> str:
    """`vision`, `aligner` or `language` for a module or parameter name."""
    pieces = name.split(".")
    if any(p in ALIGNER for p in pieces):  # before the tower: Qwen2-VL's merger sits inside `visual`
        return "aligner"
    if any(p in VISION_TOWER for p in pieces):
        return "vision"
    return "language"


def linear_pattern(model, parts: tuple[str, ...]) -> str:
    """A peft `target_modules` regex over the linear layers of `parts` (language, vision); never the output head."""
    import re

    import torch

    output = model.get_output_embeddings()
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not output and part_of(name) in parts]
    return "^(" + "|".join(re.escape(n) for n in names) + ")$" if names else ""


def _top_modules(model, part: str) -> list[str]:
    """The short names of the outermost modules of `part` (e.g. multi_modal_projector), as modules_to_save takes
    them; a container (Qwen3-VL's `deepstack_merger_list`, which peft cannot wrap) by its members
    (`deepstack_merger_list.0`, ...)."""
    import torch

    found, names = [], set()
    for name, module in model.named_modules():
        if not name or part_of(name) != part or any(name.startswith(f + ".") for f in found):
            continue
        found.append(name)
        short = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.ModuleList | torch.nn.ModuleDict):
            names.update(f"{short}.{child}" for child, _ in module.named_children())
        else:
            names.add(short)
    return sorted(names)


def adapter_fields(model, args) -> dict:
    """LoraConfig's `target_modules` and `modules_to_save` for a vision-language model under TunerArgs `args`:
    adapters on the language model (unless --freeze_language) and the vision tower (--lora_vision); the aligner,
    and an unfrozen vision tower that is not adapted, train in full and are saved with the adapter."""
    parts = (() if args.freeze_language else ("language",)) + (("vision",) if args.lora_vision else ())
    pattern = linear_pattern(model, parts) if parts else ""
    if not pattern:
        raise TunestackError("--freeze_language leaves the adapter nothing to adapt: add --lora_vision, or train "
                             "the vision side in full with --tuner full --freeze_language --freeze_vision false")
    saved = list(args.modules_to_save)
    if not args.freeze_aligner:
        saved += _top_modules(model, "aligner")
    if not args.freeze_vision and not args.lora_vision:
        saved += _top_modules(model, "vision")
    return {"target_modules": pattern, "modules_to_save": sorted(set(saved)) or None}


def freeze_parts(model, args) -> None:
    """Full fine-tuning of a vision-language model: every part trains but those frozen by the flags."""
    frozen = {part for part, flag in (("vision", args.freeze_vision), ("aligner", args.freeze_aligner),
                                      ("language", args.freeze_language)) if flag}
    for name, parameter in model.named_parameters():
        if part_of(name) in frozen:
            parameter.requires_grad_(False)
