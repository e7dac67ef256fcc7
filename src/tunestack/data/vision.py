"""Conversations with images, audio or videos for multimodal models.

Rows keep their media as references (paths or URLs) until a batch is built. Encoding renders a conversation with
the processor's chat template (media parts in place of each `<image>` / `<audio>` / `<video>` placeholder) and
masks the loss to the assistant turns on the text's own tokens, one placeholder token per image, clip or video. At
batch time the media are read (videos sampled as the processor's `video_sampling` says) and the processor expands
each placeholder into the model's media tokens (and their pixel or feature tensors); the labels are carried over
token by token, so media tokens, like the prompt, are never trained on.
"""

from __future__ import annotations

from tunestack.data.tokenize import IGNORE_INDEX, assistant_spans, char_mask_to_labels
from tunestack.errors import DataError
from tunestack.media import content_parts, load_audio, load_image, load_video


def part_messages(messages: list[dict]) -> list[dict]:
    """Canonical messages with their content as processor chat templates take it: lists of image and text parts."""
    return [{**m, "content": content_parts(m["content"] or "")} for m in messages]


def encode_media_rows(rows, processor, source: str, template_kwargs: dict | None = None) -> list[dict]:
    """Each row as {text, input_ids, labels, images, audios, videos, where}: `input_ids` hold one placeholder token
    per image, clip or video (the processor expands them at batch time); the media were read once when the data
    loaded (with --on_bad_media).
    Grounding placeholders are written in the model family's box convention (data/grounding.py)."""
    from tunestack.data.grounding import convention_of, render_objects

    tokenizer, convention = processor.tokenizer, convention_of(processor)
    encoded = []
    for index, row in enumerate(rows, 1):
        where = f"{source}, example {index}"
        messages = render_objects(row["messages"], row.get("objects"), list(row.get("images") or []), convention,
                                  where, getattr(processor, "image_processor", None))
        try:
            text, spans = assistant_spans(tokenizer, part_messages(messages), template_kwargs=template_kwargs)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        labels = char_mask_to_labels(enc["input_ids"], enc["offset_mapping"], spans)
        encoded.append({"text": text, "input_ids": list(enc["input_ids"]), "labels": labels,
                        "images": list(row.get("images") or []), "audios": list(row.get("audios") or []),
                        "videos": list(row.get("videos") or []), "where": where})
    return encoded


def pack_text_rows(rows: list[dict], max_length: int, source: str) -> tuple[list[dict], dict]:
    """`--packing` on a multimodal model: the rows without media, cut to `max_length`, packed together as
    text rows are (data/packing.py: restarting positions, no target across a seam); rows with media stay one per
    row, since the processor expands their media batch by batch. Returns the rows and what packing did."""
    from tunestack.data.packing import pack_sequences

    text = [{"input_ids": r["input_ids"][:max_length], "labels": r["labels"][:max_length]}
            for r in rows if not has_media(r)]
    packed = [{**row, "where": f"{source}, packed row {number}"}
              for number, row in enumerate(pack_sequences(text, max_length), 1)]
    return [r for r in rows if has_media(r)] + packed, {"text_rows": len(text), "packed_rows": len(packed)}


def has_media(row: dict) -> bool:
    """Whether an encoded row carries images, audio or videos."""
    return bool(row["images"] or row.get("audios") or row.get("videos"))


def expand_labels(expanded: list[int], ids: list[int], labels: list[int], where: str) -> tuple[list[int], int]:
    """`labels` (for `ids`, one placeholder token per image) carried over to the processor's `expanded` ids, and the
    position of the last token the processor inserted (-1 if none): an inserted token (image tokens, their row and
    column markers) is never a target."""
    out, j, last_inserted = [], 0, -1
    for position, token in enumerate(expanded):
        if j < len(ids) and token == ids[j]:
            out.append(labels[j])
            j += 1
        else:
            out.append(IGNORE_INDEX)
            last_inserted = position
    if j != len(ids):
        raise DataError(f"{where}: the processor's tokens do not contain the conversation's own tokens in order, so "
                        "the loss mask cannot be placed; the processor's tokenizer differs from its chat template's")
    return out, last_inserted


class MediaCollator:
    """A batch of encoded rows through the processor: media read and expanded, labels carried over, right padding.
    A row longer than `max_length` once its images are expanded is cut when the cut falls after its last image
    token, and is an error naming the row otherwise. A batch that holds packed text rows (`pack_text_rows`) has
    position ids that restart at each example (a row that is not packed is one example) and no attention mask, as
    a packed text batch has."""

    # Processor outputs with one value per token of a row, padded like input_ids when rows are joined.
    TOKEN_ALIGNED = ("token_type_ids", "mm_token_type_ids")

    def __init__(self, processor, max_length: int):
        self.processor = processor
        self.max_length = max_length

    def __call__(self, features: list[dict]) -> dict:
        if not any("position_ids" in f for f in features):
            return self._expanded(features)
        media = [f for f in features if "position_ids" not in f]
        return self._with_packed(features, self._expanded(media) if media else None)

    def _with_packed(self, features: list[dict], expanded: dict | None) -> dict:
        """Packed rows and the processor's rows (`expanded`, for the features without position ids, in order) as
        one batch, padded as packed text is (data/packing.py); the processor's token-aligned outputs padded with 0,
        its image tensors as they are."""
        import torch

        from tunestack.data.packing import Collator

        expanded = expanded or {}
        aligned = [key for key in self.TOKEN_ALIGNED if key in expanded]
        rows, media_row = [], 0
        for f in features:
            if "position_ids" in f:
                rows.append({key: list(f[key]) for key in ("input_ids", "labels", "position_ids")})
                continue
            kept = expanded["attention_mask"][media_row].bool()
            row = {key: expanded[key][media_row][kept].tolist() for key in ("input_ids", "labels", *aligned)}
            rows.append({**row, "position_ids": list(range(len(row["input_ids"])))})
            media_row += 1
        batch = Collator(self.processor.tokenizer.pad_token_id)(rows)
        longest = batch["input_ids"].shape[1]
        for key in aligned:  # a packed row has none of them: zeros, like the padding
            batch[key] = torch.tensor([row.get(key, []) + [0] * (longest - len(row.get(key, []))) for row in rows],
                                      dtype=torch.long)
        batch.update({key: value for key, value in expanded.items()
                      if key not in ("input_ids", "labels", "attention_mask", *aligned)})
        return batch

    def _expanded(self, features: list[dict]) -> dict:
        import torch

        images = [[load_image(ref, f["where"]) for ref in f["images"]] for f in features]
        kwargs = {"images": images} if any(images) else {}
        if any(f.get("audios") for f in features):  # one flat list: the processor takes clips in text order
            rate = self.processor.feature_extractor.sampling_rate
            kwargs.update(audio=[load_audio(ref, f["where"], rate) for f in features for ref in f["audios"]],
                          sampling_rate=rate)
        if any(f.get("videos") for f in features):  # one flat list, sampled as the processor says (--fps)
            from tunestack.model.vision import video_inputs

            sampling = self.processor.video_sampling
            kwargs.update(video_inputs(self.processor, [load_video(ref, f["where"], **sampling)
                                                        for f in features for ref in f["videos"]]))
        batch = dict(self.processor(text=[f["text"] for f in features], return_tensors="pt", padding=True,
                                    add_special_tokens=False, **kwargs))
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, f in enumerate(features):
            kept = batch["attention_mask"][row].bool()
            row_labels, last_inserted = expand_labels(batch["input_ids"][row][kept].tolist(), f["input_ids"],
                                                      f["labels"], f["where"])
            if last_inserted >= self.max_length:
                raise DataError(f"{f['where']}: with its media expanded the example is {len(row_labels)} tokens, "
                                f"and --max_length {self.max_length} would cut into its media; raise --max_length")
            labels[row, kept] = torch.tensor(row_labels, dtype=torch.long)
        batch["labels"] = labels
        if batch["input_ids"].shape[1] > self.max_length:
            for key in ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids"):
                if key in batch:
                    batch[key] = batch[key][:, : self.max_length]
        return batch
