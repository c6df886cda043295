"""Transfer: a GHN used on another dataset, corpus or kind of target (logah.transfer)."""

import dataclasses
import json
import warnings

import pytest
import torch

from conftest import SMALL_VIT
from logah.checkpoint import TOKENIZER_DIR, load_ghn, read_metadata
from logah.cli import main
from logah.data import get_tokenizer
from logah.data.tokenization import tokenizer_fingerprint
from logah.errors import LogahError
from logah.finetune import evaluate_init, finetune, make_finetuner
from logah.inits import initial_model
from logah.predict import predict_params
from logah.families.vit import ViTArch
from logah.targets import arch_to_dict
from logah.tasks import DataConfig, make_task
from logah.training import train_ghn
from logah.transfer import TransferWarning, novelties
from test_finetune import TEXT, TINY_GPT, TINY_GPT_SPACE, ft_config
from test_training import DIGITS, TINY_SPACE, tiny_config

# in TINY_SPACE (16 px, patch 4, widths 16..64, heads 1/2/4, MLP ratio 4): only deeper or wider
IN_SPACE_VIT = ViTArch(num_layers=6, hidden_dim=96, num_heads=4, mlp_dim=384, image_size=16,
                       patch_size=4, num_classes=10)
IN_SPACE_GPT = dataclasses.replace(TINY_GPT, n_head=4)      # in TINY_GPT_SPACE
KJV = dataclasses.replace(TEXT, dataset="kjv")


@pytest.fixture(scope="module")
def vit_ghn(tmp_path_factory):
    """A LoGAH GHN briefly trained on digits."""
    folder = tmp_path_factory.mktemp("vit") / "ghn"
    train_ghn(tiny_config(steps=2, checkpoint_every=2), folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def text_ghn(tmp_path_factory):
    """A LoGAH GHN briefly trained on Shakespeare with the corpus's own 1024-token BPE."""
    folder = tmp_path_factory.mktemp("text") / "ghn"
    train_ghn(tiny_config(steps=2, checkpoint_every=2, space=TINY_GPT_SPACE, data=TEXT), folder,
              progress=False)
    return folder


def _predicted(ghn_folder, arch) -> dict:
    return predict_params(load_ghn(ghn_folder), arch)


def test_a_text_ghn_records_its_tokenizer(text_ghn):
    trained_on = read_metadata(text_ghn).record["trained_on"]
    shakespeare = get_tokenizer("bpe", corpus="shakespeare", vocab_size=1024)
    assert trained_on["family"] == "gpt2" and trained_on["space"]["name"] == "gpts-cpu"
    assert trained_on["tokenizer"]["fingerprint"] == tokenizer_fingerprint(shakespeare)
    saved = get_tokenizer(str(text_ghn / TOKENIZER_DIR))
    assert tokenizer_fingerprint(saved) == tokenizer_fingerprint(shakespeare)
    assert saved("To be, or not to be")["input_ids"] == shakespeare("To be, or not to be")["input_ids"]


def test_another_corpus_is_read_with_the_ghns_tokenizer_by_default(text_ghn):
    trainer = make_finetuner(ft_config("gpt2", init="logah", ghn=str(text_ghn), data=KJV))
    shakespeare = get_tokenizer("bpe", corpus="shakespeare", vocab_size=1024)
    assert tokenizer_fingerprint(trainer.task.tokenizer) == tokenizer_fingerprint(shakespeare)
    predicted = _predicted(text_ghn, trainer.arch)
    params = dict(trainer.net.named_parameters())
    for name in ("transformer.wte.weight", "lm_head.weight", "transformer.h.0.attn.c_attn.weight"):
        torch.testing.assert_close(params[name].detach(), predicted[name], msg=name)


def test_another_tokenizer_warns_and_reinitialises_the_embeddings(text_ghn):
    config = ft_config("gpt2", init="logah", ghn=str(text_ghn),
                       data=dataclasses.replace(KJV, tokenizer="bpe"))
    with pytest.warns(TransferWarning, match="embeddings and LM head are re-initialised"):
        trainer = make_finetuner(config)
    kjv = get_tokenizer("bpe", corpus="kjv", vocab_size=1024)
    assert tokenizer_fingerprint(trainer.task.tokenizer) == tokenizer_fingerprint(kjv)
    predicted = _predicted(text_ghn, trainer.arch)
    params = dict(trainer.net.named_parameters())
    for name in ("transformer.wte.weight", "lm_head.weight"):
        assert not torch.allclose(params[name].detach(), predicted[name]), name
    torch.testing.assert_close(params["transformer.h.0.attn.c_attn.weight"].detach(),
                               predicted["transformer.h.0.attn.c_attn.weight"])


def test_a_tied_gpt2_from_a_ghn_of_another_tokenizer_initialises(text_ghn):
    """The tied LM head has no parameter of its own: re-initialising the embeddings must not
    look it up (it did, with a KeyError)."""
    tied = dataclasses.replace(TINY_GPT, tie_word_embeddings=True)
    config = ft_config("gpt2", init="logah", ghn=str(text_ghn), target=arch_to_dict(tied),
                       data=dataclasses.replace(KJV, tokenizer="bpe"))
    with pytest.warns(TransferWarning) as caught:
        trainer = make_finetuner(config)
    assert any("tied embeddings (space: untied)" in str(w.message) for w in caught)
    assert trainer.net.lm_head.weight is trainer.net.transformer.wte.weight


def test_the_classifier_is_reinitialised_when_the_dataset_differs(vit_ghn):
    fashion = DataConfig(dataset="fashion-mnist", batch_size=8, eval_batches=1)
    same = make_finetuner(ft_config("vit", init="logah", ghn=str(vit_ghn)))
    other = make_finetuner(ft_config("vit", init="logah", ghn=str(vit_ghn), data=fashion))
    kept = make_finetuner(ft_config("vit", init="logah", ghn=str(vit_ghn), data=fashion,
                               keep_classifier=True))
    predicted = _predicted(vit_ghn, same.arch)            # 10 classes in both datasets
    head = {name: dict(t.net.named_parameters())["heads.head.weight"].detach()
            for name, t in (("same", same), ("other", other), ("kept", kept))}
    torch.testing.assert_close(head["same"], predicted["heads.head.weight"])
    torch.testing.assert_close(head["kept"], predicted["heads.head.weight"])
    assert torch.count_nonzero(head["other"]) == 0         # torchvision's default head
    torch.testing.assert_close(dict(other.net.named_parameters())["conv_proj.weight"].detach(),
                               predicted["conv_proj.weight"])


def test_a_target_outside_the_training_space_gets_one_warning_naming_what_is_new(vit_ghn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # deeper and wider only: silent
        initial_model(IN_SPACE_VIT, "logah", ghn=vit_ghn)
    odd = dataclasses.replace(IN_SPACE_VIT, patch_size=8, num_heads=3, image_size=24,
                              mlp_dim=192)
    with pytest.warns(TransferWarning) as caught:
        initial_model(odd, "logah", ghn=vit_ghn)
    # only the transfer warnings: the record also holds whatever else is emitted meanwhile, e.g.
    # a ResourceWarning when garbage collection closes an earlier test's file during the block
    transfer = [w for w in caught if issubclass(w.category, TransferWarning)]
    assert len(transfer) == 1, [str(w.message) for w in caught]
    message = str(transfer[0].message)
    for novelty in ("patch size 8 (space: 4)", "image size 24 (space: 16)", "heads 3 (space: 2, 4)",
                    "MLP ratio 2 (space: 4)"):
        assert novelty in message, message
    gpt = dataclasses.replace(TINY_GPT, n_head=8, n_positions=128)
    assert novelties(gpt, TINY_GPT_SPACE) == ["heads 8 (space: 4)", "context 128 (space: 64)"]
    assert novelties(IN_SPACE_VIT, TINY_SPACE) == []


def test_a_family_mismatch_is_one_clear_error(vit_ghn, tmp_path, capsys):
    with pytest.raises(LogahError, match="trained on vit architectures.*cannot initialise a gpt2"):
        initial_model(TINY_GPT, "logah", ghn=vit_ghn)
    with pytest.raises(LogahError, match="shakespeare is a text corpus, but a vit target needs an "
                                         "image dataset"):
        make_task(SMALL_VIT, DataConfig(dataset="shakespeare"))
    with pytest.raises(LogahError, match="fashion-mnist is an image dataset, but a gpt2 target"):
        make_task(TINY_GPT, DataConfig(dataset="fashion-mnist"))
    target = tmp_path / "gpt.json"
    target.write_text(json.dumps(arch_to_dict(TINY_GPT)))
    code = main(["finetune", "--target", str(target), "--init", "logah", "--ghn", str(vit_ghn),
                 "--out", str(tmp_path / "run"), "--steps", "1", "--block-size", "32"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot initialise a gpt2 target" in err
    assert not (tmp_path / "run").exists()


def test_cli_warning_is_one_line(text_ghn, tmp_path, capsys):
    target = tmp_path / "gpt.json"
    target.write_text(json.dumps(arch_to_dict(IN_SPACE_GPT)))
    code = main(["evaluate", "--target", str(target), "--ghn", str(text_ghn), "--data", "kjv",
                 "--tokenizer", "bpe", "--block-size", "32", "--eval-batches", "1"])
    err = capsys.readouterr().err
    assert code == 0
    lines = [line for line in err.splitlines() if "warning" in line]
    assert len(lines) == 1 and lines[0].startswith("logah evaluate: warning: the text is read")


def test_fine_tuning_ends_on_the_whole_test_split(tmp_path):
    summary = finetune(ft_config("vit", init="random"), tmp_path / "run", progress=False)
    # digits' test split: 360 images, so a whole-split accuracy is a multiple of 1/360
    assert summary["test_accuracy"] * 360 == pytest.approx(round(summary["test_accuracy"] * 360))
    whole = evaluate_init(SMALL_VIT, str(tmp_path / "run" / "model"),
                          dataclasses.replace(DIGITS, eval_split="test", eval_batches=0))
    assert whole["test_accuracy"] == summary["test_accuracy"]
    assert summary["steps"] == 4
    text = finetune(ft_config("gpt2", init="random"), tmp_path / "text", progress=False)
    assert text["test_perplexity"] > 1 and text["steps"] == 4
