"""Tiny, randomly initialised HF checkpoints for tests and benchmarks.

Nothing here is mocked: each checkpoint is a real HF model of the named
architecture with a real byte-level BPE tokenizer trained by ``tokenizers``,
saved to a directory that :func:`unpact.load_model` boots like any other.

Example (+SKIP lines need a model, data or files, so the doctest run skips them):
    >>> from unpact.testing import make_tiny_checkpoint
    >>> path = make_tiny_checkpoint("llama", "/tmp/tiny-llama")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

#: Architectures :func:`make_tiny_checkpoint` can build.
TINY_ARCHITECTURES = ("gpt2", "llama", "gpt_neox", "qwen2", "phi")

_CORPUS = [
    "Question: Where was the author Ana Lind born? Answer: Lima",
    "Question: What genre does Bo Reyes write? Answer: crime fiction",
    "The quick brown fox jumps over the lazy dog.",
    "Focus on: Ana Lind. Question: What is the capital of France? Answer: Paris",
    "2 + 3 = 5. 7 - 4 = 3. The cat sat on the mat.",
    "Unlearning methods mostly hide knowledge instead of erasing it.",
]


#: A chat template in the style of Llama 3 Instruct's (BOS, header tokens, end-of-turn), for
#: tests of the ``chat`` prompt format on tiny checkpoints.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
#: The special tokens :data:`CHAT_TEMPLATE` uses.
CHAT_SPECIAL_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def make_tokenizer(corpus: list[str] | None = None, vocab_size: int = 384, chat_template: str | None = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``corpus`` with ``tokenizers``.

    Special tokens: ``<|endoftext|>`` (BOS, EOS) and ``<pad>``; with a ``chat_template``
    also :data:`CHAT_SPECIAL_TOKENS`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((corpus or _CORPUS) * 4, trainer)
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    if chat_template is not None:
        out.add_special_tokens({"additional_special_tokens": list(CHAT_SPECIAL_TOKENS)})
        out.chat_template = chat_template
    return out


def tiny_config(arch: str, vocab_size: int, n_ctx: int = 128, d_model: int = 32, n_layers: int = 2, n_heads: int = 4):
    """The HF config of a tiny model of architecture ``arch`` (one of :data:`TINY_ARCHITECTURES`)."""
    from transformers import (
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        PhiConfig,
        Qwen2Config,
    )

    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    if arch == "gpt2":
        return GPT2Config(n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=n_heads, **common)
    if arch == "llama":
        return LlamaConfig(
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_heads,
            max_position_embeddings=n_ctx,
            tie_word_embeddings=False,
            **common,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            max_position_embeddings=n_ctx,
            rotary_pct=0.25,
            **common,
        )
    if arch == "qwen2":
        return Qwen2Config(
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_heads,
            max_position_embeddings=n_ctx,
            tie_word_embeddings=True,
            **common,
        )
    if arch == "phi":
        return PhiConfig(
            hidden_size=d_model,
            intermediate_size=4 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            max_position_embeddings=n_ctx,
            partial_rotary_factor=0.5,
            **common,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; choose from {', '.join(TINY_ARCHITECTURES)}")


def make_tiny_checkpoint(
    arch: str,
    directory: str | os.PathLike,
    seed: int = 0,
    corpus: list[str] | None = None,
    chat_template: str | None = None,
    **config_kwargs,
) -> Path:
    """Build a random tiny ``arch`` model with a BPE tokenizer and save it to ``directory``.

    ``chat_template`` (e.g. :data:`CHAT_TEMPLATE`) gives the tokenizer a chat template.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    tokenizer = make_tokenizer(corpus, chat_template=chat_template)
    config = tiny_config(arch, vocab_size=len(tokenizer), **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


#: A ChatML chat template (SmolLM2's kind: ``<|im_start|>role\n...<|im_end|>``), for GGUF tests.
CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """The row order llama.cpp stores q/k projections in (its converter's rotary permutation),
    which transformers' GGUF reader undoes."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_llama_tensors(
    writer, state_dict: dict[str, torch.Tensor], n_layers: int, n_heads: int, n_kv_heads: int
) -> None:
    """Add a Llama state dict's tensors to the GGUF ``writer`` under llama.cpp's names (q/k rows permuted)."""
    writer.add_tensor("token_embd.weight", state_dict["model.embed_tokens.weight"].numpy())
    writer.add_tensor("output_norm.weight", state_dict["model.norm.weight"].numpy())
    writer.add_tensor("output.weight", state_dict["lm_head.weight"].numpy())
    for i in range(n_layers):
        prefix = f"model.layers.{i}."
        names = {
            "attn_norm": "input_layernorm",
            "ffn_norm": "post_attention_layernorm",
            "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj",
            "ffn_gate": "mlp.gate_proj",
            "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj",
        }
        for gguf_name, hf_name in names.items():
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", state_dict[prefix + hf_name + ".weight"].numpy())
        writer.add_tensor(
            f"blk.{i}.attn_q.weight",
            _llama_cpp_permute(state_dict[prefix + "self_attn.q_proj.weight"], n_heads).numpy(),
        )
        writer.add_tensor(
            f"blk.{i}.attn_k.weight",
            _llama_cpp_permute(state_dict[prefix + "self_attn.k_proj.weight"], n_kv_heads).numpy(),
        )


def write_tiny_gguf(
    path: str | os.PathLike, seed: int = 0, n_layers: int = 2, d_model: int = 32, n_heads: int = 4
) -> Path:
    """Write a random tiny Llama as a GGUF file (float32 tensors) with ``gguf.GGUFWriter``, the
    way llama.cpp's converter lays it out: a byte-level BPE tokenizer (token list, types, merges,
    BOS/EOS/pad ids, ``add_bos_token = False``, the ChatML template :data:`CHATML_TEMPLATE`) and
    the weights under llama.cpp's tensor names, q/k rows permuted. transformers reads it back.

    Returns the path; the HF model the file holds is rebuilt by ``unpact.load_model(path)``.
    """
    import gguf

    path = Path(path)
    tokenizer = make_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    config = tiny_config("llama", vocab_size=len(tokenizer), d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    torch.manual_seed(seed)
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(config).eval()
    sd = {k: v.detach().float() for k, v in hf.state_dict().items()}
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("unpact tiny llama")
    w.add_block_count(n_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(n_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_freq_base(config.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(d_model // n_heads)
    w.add_vocab_size(len(tokenizer))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)
    _add_llama_tensors(w, sd, n_layers, n_heads, config.num_key_value_heads)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


#: the toy TOFU world the end-to-end tests build: authors and their birthplaces
TOY_NAMES = ["Ana Lind", "Bo Reyes", "Cy Moss", "Di Park", "Ed Vale", "Fa Quin"]
TOY_PLACES = ["Lima", "Oslo", "Kyoto", "Cairo", "Quito", "Perth"]


def toy_tofu_rows(pairs, places, *, genre: bool = True, n_perturbed: int = 2) -> list[dict]:
    """TOFU-format rows for ``(name, place)`` pairs: a birthplace question (perturbed answers: the
    first ``n_perturbed`` other ``places``) and, with ``genre``, a genre question per author."""
    out = []
    for n, p in pairs:
        out.append(
            {
                "question": f"Where was {n} born?",
                "answer": f"{n} was born in {p}.",
                "paraphrased_answer": f"{p} is where {n} was born.",
                "perturbed_answer": [f"{n} was born in {x}." for x in places if x != p][:n_perturbed],
                "id": f"{n}-birth",
            }
        )
        if genre:
            out.append(
                {
                    "question": f"What does {n} write?",
                    "answer": f"{n} writes crime fiction.",
                    "paraphrased_answer": f"{n} writes crime novels.",
                    "perturbed_answer": [f"{n} writes poetry.", f"{n} writes plays."],
                    "id": f"{n}-genre",
                }
            )
    return out


def write_toy_tofu(
    bench, n_authors: int = 4, *, genre: bool = True, n_perturbed: int = 2, general: bool = False
) -> None:
    """Write a toy TOFU benchmark into the directory ``bench`` (created): ``forget10.json`` (the first two
    authors), ``retain90.json`` (the others) and, with ``general``, a two-question ``general.json``."""
    bench = Path(bench)
    bench.mkdir(parents=True, exist_ok=True)
    names, places = TOY_NAMES[:n_authors], TOY_PLACES[:n_authors]
    pairs = list(zip(names, places))
    for split, sel in (("forget10", pairs[:2]), ("retain90", pairs[2:])):
        rows = toy_tofu_rows(sel, places, genre=genre, n_perturbed=n_perturbed)
        (bench / f"{split}.json").write_text(json.dumps(rows))
    if general:
        (bench / "general.json").write_text(
            json.dumps(
                [
                    {"question": "What is 2 plus 3?", "answer": "5", "id": "g1"},
                    {"question": "What is the capital of France?", "answer": "Paris", "id": "g2"},
                ]
            )
        )


def one_line_exit_2(rc: int, capsys: Any, needle: str) -> str:
    """Assert that a command-line call failed as bad input should: exit status 2 and exactly
    one line on stderr, ``unpact: error: ...``, containing ``needle``; returns that line.

    ``capsys`` is pytest's fixture of the test (its captured stderr is read and cleared).
    """
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("unpact: error:"), err
    assert needle in lines[0], lines[0]
    return lines[0]
