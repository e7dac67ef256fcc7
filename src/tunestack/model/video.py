"""Videos for the Qwen2-VL family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) without torchvision.

transformers' video processors for these models need torchvision, which does not load beside the CPU build of
torch. Their pixels are the image processor's, arranged in time: every frame is resized to the video's pixel
budget, rescaled and normalised exactly as a picture is, and each patch vector holds `temporal_patch_size`
consecutive frames (an image is the same frame repeated). So the image processor (its PIL implementation) processes
each sampled frame, and the frames' patches are regrouped in time: a video of two identical frames gives exactly the
patches of the picture.

The budget differs by generation: Qwen2-VL and Qwen2.5-VL bound each frame's pixels (the image processor's own
`smart_resize` at the video budget); Qwen3-VL bounds the whole video's (`frame_size` below), and its prompt writes
each time step's time stamp, which its processor class adds from the frames' rate.
"""

from __future__ import annotations

from pathlib import Path

VIDEO_BUDGET = {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}
"""The pixel budget per frame of transformers' Qwen2VLVideoProcessor, when the model folder names none."""
WHOLE_VIDEO_BUDGET = {"shortest_edge": 128 * 32 * 32, "longest_edge": 768 * 32 * 32}
"""Qwen3VLVideoProcessor's budget over all of a video's frames."""


def video_budget(path, whole_video: bool = False) -> dict:
    """The model's video pixel budget: `video_preprocessor_config.json`'s size (or its min_pixels / max_pixels),
    else transformers' default (per frame, or over the whole video for Qwen3-VL, `whole_video`)."""
    import json

    default = WHOLE_VIDEO_BUDGET if whole_video else VIDEO_BUDGET
    config = Path(path) / "video_preprocessor_config.json"
    if not config.is_file():
        return dict(default)
    saved = json.loads(config.read_text())
    size = saved.get("size") or {}
    return {"shortest_edge": saved.get("min_pixels") or size.get("shortest_edge") or default["shortest_edge"],
            "longest_edge": saved.get("max_pixels") or size.get("longest_edge") or default["longest_edge"]}


def frame_size(frames: int, height: int, width: int, factor: int, step: int, budget: dict) -> tuple[int, int]:
    """Qwen3-VL's frame size for a video: the nearest multiples of `factor` to the frame's shape, scaled (keeping
    the aspect ratio) so that all `frames` frames (rounded to time steps of `step`) hold between the budget's
    shortest_edge and longest_edge pixels; frames smaller than one patch are first scaled up to one."""
    import math

    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    rows, cols = round(height / factor) * factor, round(width / factor) * factor
    steps = round(frames / step) * step
    if steps * rows * cols > budget["longest_edge"]:
        shrink = math.sqrt(frames * height * width / budget["longest_edge"])
        rows = max(factor, math.floor(height / shrink / factor) * factor)
        cols = max(factor, math.floor(width / shrink / factor) * factor)
    elif steps * rows * cols < budget["shortest_edge"]:
        grow = math.sqrt(budget["shortest_edge"] / (frames * height * width))
        rows, cols = math.ceil(height * grow / factor) * factor, math.ceil(width * grow / factor) * factor
    return rows, cols


def time_stamps(video, step: int) -> list[float]:
    """The time of each of the video's time steps in seconds, as Qwen3-VL's prompt writes them: the mean of its
    frames' times (a padded last step repeats the last frame's)."""
    times = [index / video.fps for index in range(len(video))]
    times += [times[-1]] * (-len(times) % step)
    return [sum(times[i:i + step]) / step for i in range(0, len(times), step)]


def takes_video(image_processor) -> bool:
    """Whether the image processor is one whose patches have a time axis (the Qwen2-VL family's)."""
    return all(hasattr(image_processor, key) for key in ("temporal_patch_size", "merge_size", "patch_size"))


def video_features(image_processor, videos: list, budget: dict, whole_video: bool = False) -> dict:
    """`pixel_values_videos` (patches of every video, one after another) and `video_grid_thw` (time, height and
    width in patches, per video) of `videos` (media.VideoFrames), as the Qwen2-VL video processor gives them (the
    Qwen3-VL one with `whole_video`: the budget bounds all frames together).

    A video's frame count is padded to a multiple of the temporal patch size with its last frame, as transformers
    pads it."""
    import numpy as np
    import torch
    from PIL import Image

    step = image_processor.temporal_patch_size
    pixels, grids = [], []
    for video in videos:
        frames = [Image.fromarray(frame) for frame in video.frames]
        frames += [frames[-1]] * (-len(frames) % step)
        size = budget
        if whole_video:  # resized here to the video's size, which the image processor then keeps as it is
            factor = image_processor.patch_size * image_processor.merge_size
            rows, cols = frame_size(len(video), frames[0].height, frames[0].width, factor, step, budget)
            frames = [frame.resize((cols, rows), Image.Resampling.BICUBIC) for frame in frames]
            size = {"shortest_edge": rows * cols, "longest_edge": rows * cols}
        out = image_processor(images=frames, return_tensors="np", size=size)
        (_, height, width), = {tuple(int(n) for n in grid) for grid in out["image_grid_thw"]}
        channels = 3
        patch = image_processor.patch_size
        # each frame's patches as (patches, channels, time, p, p): an image's time axis repeats the frame
        per_frame = out["pixel_values"].reshape(len(frames), height * width, channels, step, patch, patch)[:, :, :, 0]
        for start in range(0, len(frames), step):
            group = per_frame[start:start + step]  # (time, patches, channels, p, p)
            pixels.append(np.ascontiguousarray(group.transpose(1, 2, 0, 3, 4)).reshape(height * width, -1))
        grids.append([len(frames) // step, height, width])
    return {"pixel_values_videos": torch.from_numpy(np.concatenate(pixels)),
            "video_grid_thw": torch.tensor(grids, dtype=torch.long)}
