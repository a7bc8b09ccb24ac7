"""GGUF in and out of training: an embedded model becomes a base to train, a trained folder a GGUF to serve.

In: transformers reads a GGUF file (through the `gguf` package) and dequantises every tensor to
float32; `import_gguf` saves the result as an ordinary Hugging Face folder, so SFT and RL start
from a real model with nothing downloaded — the file is the one `deepdraft setup --model NAME`
already put in the model cache.

Out: `export_gguf` writes a trained folder as a GGUF that llama.cpp (the embedded runtime) serves.
The file it was imported from is the template: its metadata (architecture numbers, tokenizer,
chat template) is copied unchanged and every tensor is replaced by the trained one, in the same
order and shape. That keeps the conversion small — only names and llama.cpp's rotary layout of
the query and key rows need translating — and it refuses a model whose shapes or vocabulary differ
from the template's rather than writing a file llama.cpp would misread. Only the `llama`
architecture (SmolLM2) is handled, the one this has been checked on.

Precision: llama.cpp's 4-bit types round away fine-tuning-sized changes to a weight, so the
default output is float16 (`q8_0` halves it again and keeps most of them; `source` repeats the
template's own types, e.g. SmolLM2's Q4_1, for the smallest file).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deepdraft.errors import ConfigError, UserError
from deepdraft.llm import embedded_models

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EXPORT_TYPES", "ExportType", "export_gguf", "gguf_source", "import_gguf", "load_gguf"]

ExportType = Literal["f32", "f16", "q8_0", "source"]
EXPORT_TYPES: tuple[ExportType, ...] = ("f32", "f16", "q8_0", "source")
ARCHITECTURES = ("llama",)


def gguf_source(model: str) -> Path:
    """A GGUF file: a path, or the name of an embedded model installed in the model cache."""
    path = Path(model).expanduser()
    if path.suffix == ".gguf" or path.exists():
        if not path.exists():
            raise UserError(f"GGUF file {path} does not exist")
        if not path.is_file():
            raise UserError(f"{path} is not a GGUF file")
        return path
    return embedded_models.verify(embedded_models.get_spec(model))


def load_gguf(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) read from a GGUF file, weights dequantised to float32."""
    _require_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    # The weights are plain float32 tensors now, but the GGUF quantiser that loaded them marks the
    # model as neither trainable nor saveable, and the config would send every later load looking
    # for the GGUF file: both go, and the model is an ordinary one.
    model.hf_quantizer = None
    model.config.quantization_config = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def import_gguf(path: Path, folder: Path) -> Path:
    """Save the GGUF model at `path` as a Hugging Face folder (the base for `train sft`); returns it."""
    model, tokenizer = load_gguf(path)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def export_gguf(folder: Path, template: Path, output: Path, kind: ExportType = "f16") -> Path:
    """Write the model in `folder` as a GGUF shaped like `template` (see the module docstring)."""
    if kind not in EXPORT_TYPES:
        raise UserError(f"unknown GGUF type {kind!r} (choose {', '.join(EXPORT_TYPES)})")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a Hugging Face model folder (no config.json)")
    _require_gguf()
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reader = gguf.GGUFReader(template)
    architecture = str(reader.fields["general.architecture"].contents())
    if architecture not in ARCHITECTURES:
        raise UserError(
            f"GGUF export handles the {', '.join(ARCHITECTURES)} architecture, not {architecture!r}"
        )
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    _check_vocabulary(tokenizer, reader.fields["tokenizer.ggml.tokens"].contents(), template)
    trained = _gguf_named_tensors(model, reader, architecture)

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), architecture)
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    for field in reader.fields.values():
        # The writer sets the format's own fields and the architecture itself.
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if field.name == "general.file_type" and kind in file_types:
            writer.add_uint32(field.name, int(file_types[kind]))
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type)
    for tensor in reader.tensors:
        qtype = _output_type(kind, tensor.tensor_type, trained[tensor.name].ndim)
        data = gguf.quants.quantize(trained[tensor.name], qtype)
        writer.add_tensor(tensor.name, data, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    partial.replace(output)  # the output exists only once it is complete
    return output


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:  # pragma: no cover - the train extra brings it
        raise ConfigError(
            'reading and writing GGUF files needs the "train" extra: pip install "deepdraft[train]"'
        ) from None


def _check_vocabulary(tokenizer: Any, tokens: list[str], template: Path) -> None:
    """The template's tokenizer goes into the file, so the model must have been trained with it."""
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokens))))
    if len(tokenizer) != len(tokens) or vocabulary != tokens:
        raise UserError(
            f"the model's tokenizer is not the one of {template.name}: export only models trained from "
            "that file (deepdraft train base-model)"
        )


def _gguf_named_tensors(model: Any, reader: Any, architecture: str) -> dict[str, np.ndarray[Any, Any]]:
    """The model's tensors under their GGUF names, laid out as the template has them."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    expected = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    found: dict[str, np.ndarray[Any, Any]] = {}
    for hf_name, value in model.state_dict().items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"the model has a tensor GGUF has no name for: {hf_name}")
        if name not in expected and name == "output.weight" and config.tie_word_embeddings:
            continue  # the output layer is the token embedding; the template stores it once
        array = value.detach().float().cpu().numpy()
        if architecture == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config.num_attention_heads if "attn_q" in name else config.num_key_value_heads
            array = _rotary_pairs_interleaved(array, heads)
        if expected.get(name) != array.shape:
            raise UserError(
                f"tensor {name} has shape {array.shape}, the template {expected.get(name, 'none')}: "
                "export only models of the template's architecture and size"
            )
        found[name] = array
    missing = sorted(set(expected) - set(found))
    if missing:
        raise UserError(f"the model lacks tensors the template has: {', '.join(missing[:5])}")
    return found


def _rotary_pairs_interleaved(weight: np.ndarray[Any, Any], heads: int) -> np.ndarray[Any, Any]:
    """Query/key rows from transformers' rotary layout to llama.cpp's.

    Within each head transformers keeps the two halves of every rotated pair apart (all first
    halves, then all second halves); llama.cpp expects each pair's two rows side by side. The
    loader undoes exactly this, so import then export gives back the template's layout.
    """
    rows = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, rows, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _output_type(kind: ExportType, source: Any, ndim: int) -> Any:
    import gguf

    if kind == "source":
        return source
    if ndim < 2 or kind == "f32":
        return gguf.GGMLQuantizationType.F32  # norms stay float32 in every llama.cpp type
    return gguf.GGMLQuantizationType.F16 if kind == "f16" else gguf.GGMLQuantizationType.Q8_0
