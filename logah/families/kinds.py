"""The two kinds of family: image classifiers and Hugging Face causal language models.

A family is one of these, which gives it its task's inputs, forward pass and outputs:

* ``ImageFamily``: (B, C, H, W) float images in, (B, classes) logits out; the record has
  ``num_classes`` and ``image_size``; saved as safetensors (``logah.predict``) beside
  ``arch.json``, the module rebuilt from the record;
* ``CausalLMFamily``: (B, T) token ids in, (B, T, vocab) logits out; the record has
  ``vocab_size`` and a context length; the model is a Hugging Face ``*ForCausalLM`` built from
  the config the record gives, saved as a Hugging Face folder that ``from_pretrained`` loads
  offline, from safetensors only (a pickled ``pytorch_model.bin`` beside them is never read).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from pathlib import Path
from typing import ClassVar

from logah.errors import LogahError
from logah.families.base import IMAGE, TEXT, StudyScale, TargetFamily


class ImageFamily(TargetFamily):
    """Image classification: the record holds ``num_classes`` and ``image_size``."""

    data_kind = IMAGE
    in_channels: ClassVar[int] = 3
    classifier_names: ClassVar[tuple[str, ...]]

    def example_input(self, arch, device="meta", batch=1, seq_len=8):
        import torch

        return torch.zeros(batch, self.in_channels, arch.image_size, arch.image_size, device=device)

    def forward(self, model, arch, inputs):
        return model(inputs)

    def bound_forward(self, model, params, arch, inputs):
        from torch.func import functional_call

        return functional_call(model, params, (inputs,))

    def num_outputs(self, arch) -> int:
        return arch.num_classes

    def with_outputs(self, arch, n: int):
        return dataclasses.replace(arch, num_classes=n)

    def output_names(self, arch) -> tuple[str, ...]:
        return self.classifier_names

    def write_config(self, arch, folder: Path, dtype: str) -> None:
        pass   # arch.json (written for every family) is all a ViT needs

    def load_folder(self, arch, folder: Path, read_weights):
        return self.materialize(arch, read_weights(folder))


@contextlib.contextmanager
def quiet_transformers():
    """Hugging Face's info and warning lines and its progress bars off for the block (building
    on meta, loading a folder): what a command prints is ours."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class CausalLMFamily(TargetFamily):
    """A Hugging Face causal LM. Subclasses give the config and model classes, the record's
    context-length field and the names of the token embedding and LM head."""

    data_kind = TEXT
    context_field: ClassVar[str]                 # e.g. "n_positions"
    embedding_name: ClassVar[str]                # the token embedding's parameter
    lm_head_name: ClassVar[str] = "lm_head.weight"

    @abc.abstractmethod
    def hf_config(self, arch):
        """The Hugging Face config of ``arch`` (end-of-text is the last token, as our
        tokenizers put it)."""

    @abc.abstractmethod
    def model_class(self):
        """The Hugging Face ``*ForCausalLM`` class."""

    def context_length(self, arch) -> int:
        return getattr(arch, self.context_field)

    def build_model(self, arch, device="meta"):
        import torch

        arch.validate()
        with torch.device(device), quiet_transformers():
            return self.model_class()(self.hf_config(arch))

    def example_input(self, arch, device="meta", batch=1, seq_len=8):
        import torch

        return torch.zeros(batch, min(seq_len, self.context_length(arch)), dtype=torch.long,
                           device=device)

    def forward(self, model, arch, inputs):
        return model(input_ids=inputs, use_cache=False).logits

    def bound_forward(self, model, params, arch, inputs):
        from torch.func import functional_call

        return functional_call(model, params, (), {"input_ids": inputs, "use_cache": False}).logits

    def trace_output(self, model, arch):
        """Traced with the KV cache on: without one, transformers checks position ids for packed
        sequences with a data-dependent ``.item()``, which the meta device cannot answer. The
        cache only adds concatenations with empty tensors, which the graph reduction drops."""
        device = next(model.parameters()).device
        inputs = self.example_input(arch, device=device)
        return model(input_ids=inputs, use_cache=True).logits

    def finish_loaded(self, model, arch):
        if arch.tie_word_embeddings:
            model.tie_weights()
        return model

    def num_outputs(self, arch) -> int:
        return arch.vocab_size

    def with_outputs(self, arch, n: int):
        return dataclasses.replace(arch, vocab_size=n)

    def output_names(self, arch) -> tuple[str, ...]:
        """The token embedding and the LM head: their rows are the tokenizer's ids (a tied
        head is the embedding itself)."""
        return (self.embedding_name, self.lm_head_name)

    def write_config(self, arch, folder: Path, dtype: str) -> None:
        """``config.json``, with the weights' dtype (what ``from_pretrained`` loads them as)."""
        import torch

        config = self.hf_config(arch)
        config.dtype = getattr(torch, dtype)
        config.save_pretrained(folder)

    def load_folder(self, arch, folder: Path, read_weights):
        from safetensors import SafetensorError

        try:
            with quiet_transformers():
                model, info = self.model_class().from_pretrained(
                    folder, local_files_only=True, use_safetensors=True, output_loading_info=True)
        except (OSError, ValueError, RuntimeError, TypeError, SafetensorError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise LogahError(f"{folder}: not a loadable {self.title} folder ({reason})") from None
        problems = sorted(map(str, [*info["missing_keys"], *info["mismatched_keys"]]))
        if problems:
            raise LogahError(f"{folder}: weights missing or of the wrong shape ({problems[:3]})")
        return model


def text_scales(*, ghn: str, space: str, target: str, tuning: str, paper_space: str,
                paper_target: str, paper_tuning: str) -> dict[str, StudyScale]:
    """The study scales of a text family: Shakespeare with its own 4096-token BPE on a CPU,
    WikiText-103 with the GPT-2 tokenizer at the paper's scale."""
    def text(batch: int, eval_batches: int) -> dict:
        return dict(dataset="shakespeare", batch_size=batch, block_size=128,
                    eval_batches=eval_batches)

    return {
        "smoke": StudyScale(ghn=ghn, space=space, target=target, tuning=tuning,
                            data=text(8, 2), finetune_data=text(8, 4)),
        "demo": StudyScale(ghn=ghn, space=space, target=target, tuning=tuning,
                           data=text(8, 2), finetune_data=text(8, 16)),
        "cpu": StudyScale(ghn=ghn, space=space, target=target, tuning=tuning,
                          data=text(16, 10), finetune_data=text(16, 20)),
        "paper": StudyScale(ghn="logah-t", space=paper_space, target=paper_target,
                            tuning=paper_tuning,
                            data=dict(dataset="wikitext-103", batch_size=6, block_size=1024,
                                      tokenizer="gpt2", eval_batches=0),
                            ghn_settings=dict(steps=100_000, lr=1e-4, warmup_steps=2_000,
                                              meta_batch=2, checkpoint_every=5_000,
                                              log_every=100)),
    }
