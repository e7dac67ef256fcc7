"""Load a resolved model and its tokenizer: precision, attention kernel, optional 4-bit NF4 base."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import torch

from tunestack.data.templates import ensure_chat_template
from tunestack.errors import MissingExtraError, TunestackError
from tunestack.model.families import note_untested
from tunestack.model.precision import device_type

log = logging.getLogger(__name__)


def load_tokenizer(path, template: str | None = None, trust_remote_code: bool = False,
                   fallback_template: str | None = None, chat_template: str | None = None):
    """The tokenizer at `path` with a pad token and a chat template: the Jinja file `chat_template` if given (its
    name is then `file:PATH`), else `template`, else its own, else `fallback_template` (the model alias's) or
    chatml."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if chat_template:
        template_name = use_chat_template_file(tokenizer, chat_template)
    else:
        template_name = ensure_chat_template(tokenizer, template, fallback_template)
    if tokenizer.pad_token is None:
        set_pad_token(tokenizer)
    tokenizer.padding_side = "right"
    return tokenizer, template_name


PAD_TOKEN = "<|pad|>"
"""The token added as padding to a tokenizer that has neither a pad, an EOS nor an unknown token."""


def set_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token one: its EOS, else its unknown token, else a new PAD_TOKEN (load_model
    then grows the embeddings). An EOS pad loses nothing: labels come from the chat template's assistant spans and
    the collator pads labels with -100, so the EOS that ends an answer is still trained on; generation pads by
    attention mask."""
    if tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    elif tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
    else:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})


def pick_attention(requested: str, dtype: torch.dtype, max_length: int | None = None, packed: bool = False,
                   softcap: bool = False, sdpa: bool = True, grouped: bool = False) -> str:
    """flash attention 2 on CUDA in half precision when installed; sdpa otherwise, except for training on CPU:
    packed rows get the per-example kernel of model/attention.py, and short rows eager attention (faster than
    sdpa's CPU backward, and its L^2 scores are small), as model/attention.py's grouped kernel where `grouped` (a
    family in GROUPED_FAMILIES): the same operations without keeping a copy of the keys and values per query head.

    `softcap`: the model soft-caps its attention logits (Gemma 2's attn_logit_softcapping), which sdpa and the
    packed kernel cannot do: eager attention then, or flash attention 2 on CUDA (it soft-caps too).
    `sdpa`: whether the model's class runs under sdpa at all (gpt-oss, with its attention sinks, does not)."""
    if not sdpa and requested in ("sdpa", "tunestack_packed"):
        raise TunestackError(f"--attn_implementation {requested}: transformers runs this model's attention only "
                             "eagerly or with flash attention; use eager (or auto)")
    softcap = softcap or not sdpa
    if softcap and requested in ("sdpa", "tunestack_packed"):
        raise TunestackError(f"--attn_implementation {requested}: this model soft-caps its attention logits "
                             "(attn_logit_softcapping), which sdpa cannot do; use eager (or auto)")
    if softcap and requested == "auto":
        flash = torch.cuda.is_available() and dtype != torch.float32 and importlib.util.find_spec("flash_attn")
        return "flash_attention_2" if flash else "eager"
    if requested != "auto":
        if requested.startswith("flash") and not torch.cuda.is_available():
            raise TunestackError(f"--attn_implementation {requested}: flash attention needs a CUDA GPU; use sdpa")
        if requested == "flex_attention" and max_length is not None and not torch.cuda.is_available():
            raise TunestackError("--attn_implementation flex_attention: PyTorch's FlexAttention has no backward pass "
                                 "on CPU, so it cannot train here; use sdpa or eager (it serves and evaluates)")
        return requested
    if torch.cuda.is_available():
        if dtype != torch.float32 and importlib.util.find_spec("flash_attn"):
            return "flash_attention_2"
        return "sdpa"
    if packed:
        from tunestack.model.attention import register

        return register()
    if max_length is not None and max_length <= 1024:
        from tunestack.model.attention import register_grouped

        return register_grouped() if grouped else "eager"
    return "sdpa"


def attention_limits(path, trust_remote_code: bool = False) -> tuple[bool, bool, bool]:
    """(softcap, sdpa, grouped): whether the model's config soft-caps attention logits (Gemma 2:
    attn_logit_softcapping; for a multimodal config, its text config's), whether its causal-LM class supports sdpa,
    and whether it is a text model of a family the grouped eager kernel serves (model/attention.py)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from tunestack.model.attention import GROUPED_FAMILIES

    try:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return False, True, False  # loading the model reports the problem
    model_class = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type, ""), None)
    sdpa = getattr(model_class, "_supports_sdpa", True) is not False
    grouped = config.model_type in GROUPED_FAMILIES and not trust_remote_code
    config = getattr(config, "text_config", None) or config
    return getattr(config, "attn_logit_softcapping", None) is not None, sdpa, grouped


def nf4_config(compute_dtype: torch.dtype):
    """4-bit NF4 with double quantization, through bitsandbytes (which also runs on CPU since 0.49)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingExtraError("bitsandbytes", "qlora", "QLoRA (a 4-bit NF4 base model)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype,
    )


def load_model(path, dtype: torch.dtype, attn: str = "auto", quantize_4bit: bool = False,
               trust_remote_code: bool = False, tokenizer=None, train_length: int | None = None,
               packed: bool = False, head: str = "causal", tp: int = 1):
    """A causal LM on the default device, weights in `dtype` (or NF4 with `dtype` compute when quantize_4bit).

    `train_length` (the longest training row) and `packed` describe the training rows, when loading for training;
    they inform the attention choice. `head="reward"` loads the same weights under a one-output
    sequence-classification head (a reward model; the head starts fresh unless the folder holds one).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if is_quanto_folder(path) or (is_prequantized(path) and not quantize_4bit):
        return _prequantized(path, tokenizer)
    attn = pick_attention(attn, dtype, train_length, packed, *attention_limits(path, trust_remote_code))
    kwargs = {"dtype": dtype, "attn_implementation": attn, "trust_remote_code": trust_remote_code}
    if tp > 1:  # each process holds its slice of every layer (transformers' tp_plan)
        kwargs.update(tp_plan="auto", tp_size=tp)
    if quantize_4bit:
        kwargs["quantization_config"] = nf4_config(dtype)
        kwargs["device_map"] = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    from tunestack.model.vision import is_multimodal

    try:
        if head == "reward":
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
        elif is_multimodal(path):  # image-text-to-text models and audio ones (Qwen2-Audio)
            from transformers import AutoModelForMultimodalLM

            model = AutoModelForMultimodalLM.from_pretrained(path, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:
        if quantize_4bit:
            raise TunestackError(f"bitsandbytes cannot load {path} in 4-bit NF4 on this machine "
                                 f"({type(exc).__name__}: {exc}); use --tuner lora instead") from exc
        if isinstance(exc, (OSError, ValueError)):
            raise TunestackError(f"could not load a causal language model from {path}: {exc}") from exc
        raise
    note_untested(getattr(model.config, "model_type", None))
    if not quantize_4bit and tp == 1 and device_type() == "cuda":
        model.to("cuda")
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer is not None and head == "reward":
        model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-padding token
    if tokenizer is not None and getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _prequantized(path, tokenizer):
    """A model exported quantized: its own precision and library, generation settings as load_model gives."""
    try:
        model = load_exported(path)
    except (OSError, ValueError, ImportError) as exc:
        raise TunestackError(f"could not load the quantized model in {path}: {exc}") from exc
    if tokenizer is not None and model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


QUANTO_QMAP = "quanto_qmap.json"
"""optimum-quanto's map of quantized modules; a folder holding it is loaded by optimum-quanto, not transformers."""


def is_quanto_folder(path) -> bool:
    return (Path(path) / QUANTO_QMAP).is_file()


def is_prequantized(path) -> bool:
    """Whether the folder's config.json says its weights are already quantized."""
    config = Path(path) / "config.json"
    return config.is_file() and "quantization_config" in json.loads(config.read_text())


def load_exported(path, quantized: bool = True):
    """A model as an export wrote it: quantized ones on the device their library runs on; optimum-quanto folders
    (which transformers cannot read) through optimum-quanto."""
    from transformers import AutoModelForCausalLM

    if is_quanto_folder(path):
        if importlib.util.find_spec("optimum.quanto") is None:
            raise MissingExtraError("optimum-quanto", "quanto", f"loading the optimum-quanto model in {path}")
        from optimum.quanto import QuantizedModelForCausalLM

        return QuantizedModelForCausalLM.from_pretrained(str(path))
    from tunestack.model.vision import is_multimodal

    device = ({"": 0} if torch.cuda.is_available() else {"": "cpu"}) if quantized else None
    from transformers import AutoModelForMultimodalLM

    auto = AutoModelForMultimodalLM if is_multimodal(path) else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype="auto", device_map=device)
    embedding = model.get_input_embeddings()
    if type(embedding) is torch.nn.Embedding and type(embedding.weight.data).__name__ == "Int8Tensor":
        model.set_input_embeddings(Int8Rows(embedding.weight))
    return model


class Int8Rows(torch.nn.Module):
    """An embedding over a torchao int8 matrix that dequantizes only the rows looked up.

    torchao (0.18) has no embedding kernel for its Int8Tensor, so `nn.Embedding` dequantizes the whole matrix for
    each lookup: 90 ms a token for SmolLM2's 49152 x 576 on a 2-core CPU, more than the rest of the model. The
    weight, which a tied output layer shares, stays as it is."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, ids):
        w = self.weight.data
        return ((w.qdata[ids].float() - w.zero_point[ids].float()) * w.scale[ids].float()).to(w.dtype)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weight files torch reads by unpickling, which can run code hidden in them."""


def refuse_pickle(folder: Path, allow_pickle: bool) -> None:
    """Raise, naming the file and the flag, when the weights in `folder` are pickle files only."""
    folder = Path(folder)
    if allow_pickle or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickled:
        from tunestack.errors import TunestackError

        raise TunestackError(f"{folder / pickled[0]}: pickle weights can run code when loaded, and tunestack loads "
                             "only safetensors; convert them, or pass --allow_pickle if you trust this file")


def use_chat_template_file(tokenizer, path: str) -> str:
    """Give `tokenizer` the Jinja template in the file `path` (--chat_template), checked on a two-turn
    conversation; returns the name a run records, `file:ABSOLUTE_PATH`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise TunestackError(f"--chat_template {path}: file not found")
    tokenizer.chat_template = file.read_text(encoding="utf-8")
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                                      tokenize=False)
    except Exception as exc:
        raise TunestackError(f"--chat_template {path}: the template fails on a two-turn conversation "
                             f"({type(exc).__name__}: {exc})") from None
    return f"file:{file.resolve()}"
