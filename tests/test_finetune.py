"""Fine-tuning from every init, transfer across datasets, resumption, trials, the CLI."""

import dataclasses
import json
import math

import pytest
import torch

from conftest import SMALL_VIT
from logah.archs import get_space, space_to_dict
from logah.cli import main
from logah.errors import LogahError
from logah.finetune import (FinetuneConfig, make_finetuner, evaluate_init, export_finetuned, finetune,
                            initialised_target, load_finetuned)
from logah.families import family_of
from logah.init_kinds import INIT_KINDS
from logah.inits import default_model, first_batch_inputs, initial_model, null_space_part
from logah.lsuv import TOLERANCE, layers_in_forward_order, output_variance
from logah.predict import predict_params
from logah.checkpoint import load_ghn
from logah.presets import get_preset
from logah.families.gpt2 import GPT2Arch
from logah.targets import arch_to_dict
from logah.tasks import DataConfig
from logah.runs import LocalReporter
from logah.training import train_ghn
from logah.ghn_store import config_key
from logah.trial import TrialConfig, load_trial, run_trial
from test_training import DIGITS, dies_after_first_checkpoint, tiny_config

TINY_GPT = GPT2Arch(n_layer=2, n_embd=32, n_head=2, vocab_size=1024, n_positions=64)
TEXT = DataConfig(dataset="shakespeare", batch_size=4, block_size=32, vocab_size=1024,
                  eval_batches=2)
TINY_GPT_SPACE = space_to_dict(get_space("gpts-cpu", vocab_size=1024, n_positions=64, num_archs=4))
TIME_KEYS = {"time_s", "steps_per_s", "archs_per_s", "samples_per_s", "ghn_steps_per_s",
             "ghn_archs_per_s", "ghn_samples_per_s"}


def ft_config(family: str, **overrides) -> FinetuneConfig:
    target, data = (SMALL_VIT, DIGITS) if family == "vit" else (TINY_GPT, TEXT)
    base = dict(target=arch_to_dict(target), data=data, steps=4, eval_every=2, warmup_steps=1,
                optimizer="sgd" if family == "vit" else "adamw", lr=0.01 if family == "vit" else 1e-3)
    return FinetuneConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def ghns(tmp_path_factory):
    """Briefly trained GHN checkpoints: (family, decoder) -> folder."""
    root, folders = tmp_path_factory.mktemp("ghns"), {}
    for preset in ("logah-test", "ghn3-test"):
        decoder = get_preset(preset).decoder
        folders["vit", decoder] = root / f"vit-{preset}"
        train_ghn(tiny_config(ghn=get_preset(preset), steps=2, checkpoint_every=2),
                  folders["vit", decoder], progress=False)
        folders["gpt2", decoder] = root / f"gpt2-{preset}"
        train_ghn(tiny_config(ghn=get_preset(preset), steps=2, checkpoint_every=2,
                              space=TINY_GPT_SPACE, data=TEXT), folders["gpt2", decoder],
                  progress=False)
    return folders


@pytest.mark.parametrize("family", ["vit", "gpt2"])
@pytest.mark.parametrize("init", INIT_KINDS)
def test_every_init_fine_tunes_with_finite_metrics(family, init, ghns, tmp_path):
    decoder = {"ghn3": "tiled", "logah": "low-rank"}.get(init)
    config = ft_config(family, init=init, ghn=str(ghns[family, decoder]) if decoder else None)
    summary = finetune(config, tmp_path / "run", progress=False)
    metric = "val_accuracy" if family == "vit" else "val_perplexity"
    *history, test = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [m["step"] for m in history] == [0, 2, 4] and history[0]["zero_shot"]
    assert test["final_test"] and summary[metric.replace("val_", "test_")] == test[
        metric.replace("val_", "test_")]
    assert all(math.isfinite(v) for m in history for v in m.values() if isinstance(v, float))
    assert summary["metric"] == metric and summary["final_" + metric] == history[-1][metric]
    zero_shot = summary["zero_shot_" + metric]
    if init == "random" and family == "vit":       # 10 classes: chance is 0.1
        assert zero_shot < 0.2
    if init == "random" and family == "gpt2":      # an untrained LM is near-uniform over tokens
        assert 0.7 * TINY_GPT.vocab_size < zero_shot < 1.3 * TINY_GPT.vocab_size
    arch, _ = load_finetuned(tmp_path / "run")       # the saved weights are the final ones
    assert arch.family == family
    assert evaluate_init(arch, str(tmp_path / "run" / "model"), config.data)[metric] == \
        history[-1][metric]


def test_orthogonal_init_gives_orthonormal_weight_matrices():
    model = initial_model(SMALL_VIT, "orthogonal", seed=3)
    weight = dict(model.named_parameters())["encoder.layers.encoder_layer_0.mlp.0.weight"]
    rows, cols = weight.shape              # 64 x 32: orthonormal columns
    torch.testing.assert_close(weight.t() @ weight, torch.eye(cols), atol=1e-5, rtol=0)
    random = initial_model(SMALL_VIT, "random", seed=3)
    assert not torch.allclose(dict(random.named_parameters())["encoder.layers.encoder_layer_0.mlp.0.weight"],
                              weight)


def test_ghn_init_holds_the_predicted_parameters(ghns):
    folder = ghns["vit", "low-rank"]
    model = initial_model(SMALL_VIT, "logah", ghn=folder)
    predicted = predict_params(load_ghn(folder), SMALL_VIT)
    for name, param in model.named_parameters():
        assert param.requires_grad
        torch.testing.assert_close(param.detach(), predicted[name], msg=name)
    with pytest.raises(LogahError, match="needs the tiled one"):
        initial_model(SMALL_VIT, "ghn3", ghn=folder)


def test_init_noise_adds_the_seeded_default_init_to_every_predicted_weight_matrix(ghns):
    folder = ghns["vit", "low-rank"]
    rank = load_ghn(folder).config.rank
    model = initial_model(SMALL_VIT, "logah", ghn=folder, seed=3, init_noise=0.5)
    predicted = predict_params(load_ghn(folder), SMALL_VIT)
    default = dict(default_model(SMALL_VIT, seed=3).named_parameters())
    params = dict(model.named_parameters())
    matrices = [n for n, p in params.items() if n.endswith("weight") and p.dim() >= 2]
    assert "conv_proj.weight" in matrices and "heads.head.weight" in matrices
    for name, param in params.items():
        expected = predicted[name] + 0.5 * default[name] if name in matrices else predicted[name]
        torch.testing.assert_close(param.detach(), expected, msg=name)
    # the prediction's rank is at most the decoder's; the perturbed matrix is full rank
    name = "encoder.layers.encoder_layer_0.self_attention.out_proj.weight"    # 32 x 32
    assert rank < 32 and torch.linalg.matrix_rank(predicted[name]) <= rank
    assert torch.linalg.matrix_rank(params[name].detach()) == 32
    for init, noise, message in (("random", 0.5, "has none"), ("logah", -0.1, "≥ 0"),
                                 ("logah", float("nan"), "≥ 0")):
        with pytest.raises(LogahError, match=message):
            initial_model(SMALL_VIT, init, ghn=folder, init_noise=noise)
    with pytest.raises(LogahError, match="init_noise"):
        ft_config("vit", init="logah", ghn=str(folder), init_noise=-1.0).validate()
    with pytest.raises(LogahError, match="has none"):     # refused by the config, before a run
        ft_config("vit", init="random", init_noise=0.5).validate()


def test_null_fill_keeps_the_predicted_directions_and_fills_the_rest_at_the_default_scale(ghns):
    """Each predicted matrix W becomes W + β (I − U Uᵀ) D (I − V Vᵀ): W's own singular directions
    are untouched, the matrix is full rank, the fill is D's part outside them, and layers that
    the GHN predicted alike now differ."""
    folder = ghns["vit", "low-rank"]
    rank = load_ghn(folder).config.rank
    predicted = predict_params(load_ghn(folder), SMALL_VIT)
    default = dict(default_model(SMALL_VIT, seed=5).named_parameters())
    params = {n: p.detach() for n, p in initial_model(SMALL_VIT, "logah", ghn=folder, seed=5,
                                                       null_fill=1.0).named_parameters()}
    names = [n for n in params if n.endswith("out_proj.weight")]             # 32 x 32, 2 layers
    for name in names:
        w, filled, d = predicted[name].double(), params[name].double(), default[name].detach().double()
        u, s, vh = torch.linalg.svd(w)
        kept = s > 1e-4 * s.max()
        assert 0 < kept.sum() <= rank < 32
        u, v = u[:, kept], vh[kept].T
        fill = filled - w
        torch.testing.assert_close(u.T @ fill, torch.zeros_like(u.T @ fill), atol=1e-5, rtol=0)
        torch.testing.assert_close(fill @ v, torch.zeros_like(fill @ v), atol=1e-5, rtol=0)
        outside = (torch.eye(32, dtype=torch.double) - u @ u.T) @ d @ (torch.eye(32, dtype=torch.double) - v @ v.T)
        torch.testing.assert_close(fill, outside, atol=1e-5, rtol=1e-4)
        assert torch.linalg.matrix_rank(filled) == 32
        # most of D's energy is outside a rank-r subspace of 32 dimensions: the fill is at its scale
        assert fill.norm() > 0.5 * d.norm()
    similarity = torch.nn.functional.cosine_similarity(params[names[0]].flatten(),
                                                       params[names[1]].flatten(), dim=0)
    predicted_similarity = torch.nn.functional.cosine_similarity(predicted[names[0]].flatten(),
                                                                 predicted[names[1]].flatten(), dim=0)
    assert similarity < predicted_similarity - 0.05     # 0.76 -> 0.67 for this GHN and seed
    for name in ("encoder.layers.encoder_layer_0.ln_1.weight", "encoder.pos_embedding"):
        torch.testing.assert_close(params[name], predicted[name], msg=name)   # not matrices: kept
    with pytest.raises(LogahError, match="null_fill perturbs a GHN prediction"):
        ft_config("vit", init="mimetic", null_fill=1.0).validate()
    with pytest.raises(LogahError, match="null_fill must be a number"):
        initial_model(SMALL_VIT, "logah", ghn=folder, null_fill=-1.0)


def test_rescale_directions_gives_each_predicted_direction_the_default_inits_strength(ghns):
    """Each predicted matrix keeps its directions (the same singular vectors, the same ratios
    between its singular values) and its non-zero singular values get the RMS of the default
    init's; with null_fill the fill is the same as without the rescale."""
    folder = ghns["vit", "low-rank"]
    predicted = predict_params(load_ghn(folder), SMALL_VIT)
    default = dict(default_model(SMALL_VIT, seed=3).named_parameters())
    rescaled = dict(initial_model(SMALL_VIT, "logah", ghn=folder, seed=3,
                                  rescale_directions=True).named_parameters())
    both = dict(initial_model(SMALL_VIT, "logah", ghn=folder, seed=3, rescale_directions=True,
                              null_fill=1.0).named_parameters())
    for name in [n for n in rescaled if n.endswith(("out_proj.weight", "mlp.0.weight"))]:
        w, r = predicted[name].double(), rescaled[name].detach().double()
        s_w, s_r = torch.linalg.svdvals(w), torch.linalg.svdvals(r)
        kept = s_w > 1e-4 * s_w.max()
        assert kept.sum() < len(s_w)         # a low-rank prediction, rescaled as one
        own = torch.linalg.svdvals(default[name].detach().double())
        torch.testing.assert_close(s_r[kept].pow(2).mean().sqrt(), own.pow(2).mean().sqrt(),
                                   rtol=1e-4, atol=0)
        ratio = (r.norm() / w.norm()).item()
        assert abs(ratio - 1) > 0.1                       # it did change the strength here
        torch.testing.assert_close(r, w * ratio, rtol=1e-4, atol=1e-6)   # same directions
        fill = both[name].detach().double() - r
        torch.testing.assert_close(fill, null_space_part(w, default[name].detach().double()),
                                   rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rescaled["encoder.pos_embedding"], predicted["encoder.pos_embedding"])
    with pytest.raises(LogahError, match="rescale_directions rescales a GHN prediction"):
        ft_config("vit", init="random", rescale_directions=True).validate()


def test_fill_init_orthogonal_completes_the_prediction_from_the_orthogonal_init(ghns):
    """With ``fill_init`` orthogonal the levers read the orthogonal init of the seed: each
    predicted direction gets its strength (singular values 1) and the empty directions its
    matrices' part outside the prediction; the predicted directions stay the GHN's."""
    folder = ghns["vit", "low-rank"]
    predicted = predict_params(load_ghn(folder), SMALL_VIT)
    orthogonal = dict(initial_model(SMALL_VIT, "orthogonal", seed=3).named_parameters())
    filled = dict(initial_model(SMALL_VIT, "logah", ghn=folder, seed=3, rescale_directions=True,
                                null_fill=1.0, fill_init="orthogonal").named_parameters())
    from_random = dict(initial_model(SMALL_VIT, "logah", ghn=folder, seed=3,
                                     rescale_directions=True, null_fill=1.0).named_parameters())
    names = [n for n in filled if n.endswith(("out_proj.weight", "mlp.0.weight"))]
    assert names
    for name in names:
        w, o = predicted[name].double(), orthogonal[name].detach().double()
        s_w = torch.linalg.svdvals(w)
        kept = s_w > 1e-4 * s_w.max()
        rescaled = w * (1.0 / s_w[kept].pow(2).mean().sqrt())     # orthogonal: every value 1
        fill = filled[name].detach().double() - rescaled
        torch.testing.assert_close(fill, null_space_part(w, o), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(filled[name], from_random[name], atol=1e-3)
    with pytest.raises(LogahError, match="fill_init must be one of"):
        ft_config("vit", init="logah", ghn=folder, null_fill=1.0, fill_init="lsuv").validate()
    with pytest.raises(LogahError, match="fill_init completes a GHN prediction"):
        ft_config("vit", init="random", fill_init="orthogonal").validate()
    with pytest.raises(LogahError, match="fill_init completes a GHN prediction"):
        initial_model(SMALL_VIT, "lsuv", fill_init="orthogonal")


def test_predicted_part_keeps_the_prediction_in_one_part_and_the_fill_init_elsewhere(ghns):
    """``predicted_part`` blocks keeps the (levered) prediction in the transformer blocks and
    gives the stem and head the ``fill_init`` init's values; ``outside_blocks`` the reverse."""
    folder = ghns["vit", "low-rank"]
    levers = dict(ghn=folder, seed=3, rescale_directions=True, null_fill=1.0, fill_init="orthogonal")
    whole = dict(initial_model(SMALL_VIT, "logah", **levers).named_parameters())
    orthogonal = dict(initial_model(SMALL_VIT, "orthogonal", seed=3).named_parameters())
    parts = {part: dict(initial_model(SMALL_VIT, "logah", predicted_part=part,
                                      **levers).named_parameters())
             for part in ("blocks", "outside_blocks")}
    blocks = [name for name in whole if name.startswith("encoder.layers.")]
    outside = [name for name in whole if name not in blocks]
    assert blocks and {"conv_proj.weight", "heads.head.weight", "class_token"} <= set(outside)
    for part, kept, filled in (("blocks", blocks, outside), ("outside_blocks", outside, blocks)):
        for name in kept:
            torch.testing.assert_close(parts[part][name], whole[name])
        for name in filled:
            torch.testing.assert_close(parts[part][name], orthogonal[name])
    assert not torch.allclose(whole["encoder.layers.encoder_layer_0.mlp.0.weight"],
                              orthogonal["encoder.layers.encoder_layer_0.mlp.0.weight"])
    with pytest.raises(LogahError, match="predicted_part must be one of"):
        ft_config("vit", init="logah", ghn=folder, predicted_part="heads").validate()
    with pytest.raises(LogahError, match="predicted_part chooses where a GHN prediction"):
        initial_model(SMALL_VIT, "mimetic", predicted_part="blocks")


def attention(model, arch):
    return family_of(arch).attention_layers(model, arch)


@pytest.mark.parametrize("family", ["vit", "gpt2"])
def test_mimetic_attention_replaces_only_the_predicted_attention(family, ghns):
    """A GHN init with ``mimetic_attention``: the four attention projections of every layer are
    exactly the mimetic init's of the same seed and scalars, every other parameter is exactly
    the prediction."""
    folder = str(ghns[family, "low-rank"])
    scalars = dict(mimetic_qk_alpha=0.5, mimetic_qk_beta=0.9)   # the lever's own scalars are used
    _, arch, mixed = initialised_target(ft_config(family, init="logah", ghn=folder, seed=4,
                                                  mimetic_attention=True, **scalars),
                                        device="cpu", copies=2, what="test")
    _, _, plain = initialised_target(ft_config(family, init="logah", ghn=folder, seed=4),
                                     device="cpu", copies=2, what="test")
    _, _, mimetic = initialised_target(ft_config(family, init="mimetic", seed=4, **scalars),
                                       device="cpu", copies=2, what="test")
    views = [(layer.q, layer.k, layer.v, layer.o) for layer in attention(mixed, arch)]
    for (mine, theirs) in zip(views, [(layer.q, layer.k, layer.v, layer.o)
                                      for layer in attention(mimetic, arch)]):
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    in_attention = {t.untyped_storage().data_ptr() for view in views for t in view}
    others = 0
    for (name, a), (_, b) in zip(mixed.named_parameters(), plain.named_parameters()):
        if a.untyped_storage().data_ptr() not in in_attention:
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
            others += 1
    assert others > 0 and len(views) == arch.depth
    with pytest.raises(LogahError, match="mimetic_attention replaces a GHN prediction"):
        ft_config(family, init="random", mimetic_attention=True).validate()


@pytest.mark.parametrize("family", ["vit", "gpt2"])
@pytest.mark.parametrize("init", ["logah", "random"])
def test_unit_variance_rescales_each_layer_of_any_init_to_unit_variance(family, init, ghns):
    """``unit_variance``: every layer LSUV scales has output variance 1 ± its tolerance on the
    first training batch, and each weight is the init's own times a positive factor."""
    folder = str(ghns[family, "low-rank"]) if init == "logah" else None
    task, arch, scaled = initialised_target(ft_config(family, init=init, ghn=folder, seed=2,
                                                      unit_variance=True),
                                            device="cpu", copies=2, what="test")
    _, _, start = initialised_target(ft_config(family, init=init, ghn=folder, seed=2),
                                     device="cpu", copies=2, what="test")
    inputs = first_batch_inputs(task, 2, "cpu")
    scaled.eval()
    start.eval()
    layers = layers_in_forward_order(scaled, arch, inputs)
    assert len(layers) >= 4 * arch.depth
    changed = 0
    for layer, origin in zip(layers, layers_in_forward_order(start, arch, inputs)):
        if output_variance(start, arch, inputs, origin) == 0:   # torchvision's zero classifier:
            assert all(torch.equal(w, b) for w, b in zip(layer.weights, origin.weights))
            continue                                            # nothing to scale, left as is
        assert abs(output_variance(scaled, arch, inputs, layer) - 1) < TOLERANCE, layer.name
        for weight, before in zip(layer.weights, origin.weights):
            factor = ((weight * before).sum() / (before * before).sum()).item()
            assert factor > 0
            torch.testing.assert_close(weight, factor * before, msg=layer.name)
            changed += abs(factor - 1) > 0.05
    assert changed > 0
    with pytest.raises(LogahError, match="already ends with unit output variance"):
        ft_config(family, init="lsuv", unit_variance=True).validate()
    with pytest.raises(LogahError, match="unit_variance.*no task"):
        initial_model(arch, init, ghn=folder, unit_variance=True)


def test_transfer_to_a_dataset_with_more_classes_reinitialises_the_classifier(ghns, tmp_path):
    """A GHN trained on digits (10 classes) initialises a ViT for CIFAR-100 (100 classes)."""
    data = DataConfig(dataset="cifar100-sample", batch_size=8, eval_batches=1)
    config = ft_config("vit", init="logah", ghn=str(ghns["vit", "low-rank"]), data=data)
    trainer = make_finetuner(config)
    assert trainer.arch.num_classes == 100
    predicted = predict_params(load_ghn(ghns["vit", "low-rank"]), trainer.arch)
    params = dict(trainer.net.named_parameters())
    assert torch.count_nonzero(params["heads.head.weight"]) == 0     # torchvision's default head
    torch.testing.assert_close(params["conv_proj.weight"].detach(), predicted["conv_proj.weight"])
    summary = finetune(config, tmp_path / "run", progress=False)
    assert math.isfinite(summary["final_val_accuracy"])


def test_resumed_fine_tuning_reproduces_an_uninterrupted_run(tmp_path):
    config = ft_config("vit", init="orthogonal", steps=6, eval_every=3)
    finetune(config, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        make_finetuner(config).run(dies_after_first_checkpoint(
            LocalReporter(tmp_path / "split", export_finetuned)), progress=False)
    finetune(config, tmp_path / "split", resume=True, progress=False)
    (_, full), (_, split) = load_finetuned(tmp_path / "full"), load_finetuned(tmp_path / "split")
    for (name, a), (_, b) in zip(full.state_dict().items(), split.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def _is_time(key: str) -> bool:
    return key in TIME_KEYS or key.endswith(("_wall_s", "_cpu_s"))


def _without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not _is_time(k)} for r in records]


def test_trial_is_deterministic_under_its_seeds(tmp_path):
    config = TrialConfig(ghn_training=tiny_config(steps=3, checkpoint_every=3, seed=5),
                         finetune=ft_config("vit", init="logah", seed=5))
    runs = []
    for name in ("a", "b"):
        records = []
        summary = run_trial(config, tmp_path / name, report=records.append)
        runs.append((_without_times(records), _without_times([summary])[0]))
    assert runs[0] == runs[1]
    assert all(summary[f"{phase}_wall_s"] > 0 for phase in ("ghn", "finetune"))
    records, summary = runs[0]
    assert {r["phase"] for r in records} == {"ghn", "finetune"}
    assert summary["ghn_seed"] == summary["finetune_seed"] == 5
    assert load_trial(tmp_path / "a")["summary"]["final_val_accuracy"] == summary["final_val_accuracy"]
    other = run_trial(dataclasses.replace(config, finetune=ft_config("vit", init="logah", seed=6)),
                      tmp_path / "c")
    assert other["final_val_accuracy"] != summary["final_val_accuracy"] or \
        other["zero_shot_val_accuracy"] != summary["zero_shot_val_accuracy"]


def test_trials_with_one_ghn_config_share_one_trained_ghn(tmp_path):
    training = tiny_config(steps=2, checkpoint_every=2)
    trained = []

    def train(config, folder, resume):
        trained.append(folder)
        return train_ghn(config, folder, resume=resume, progress=False)

    summaries = [run_trial(TrialConfig(ghn_training=training,
                                       finetune=ft_config("vit", init="logah", seed=seed)),
                           tmp_path / f"t{seed}", ghn_store=tmp_path / "ghns", train_fn=train)
                 for seed in (0, 1)]
    assert len(trained) == 1 and [s["ghn_reused"] for s in summaries] == [False, True]
    assert summaries[0]["ghn_key"] == summaries[1]["ghn_key"] == config_key(training)
    other = run_trial(TrialConfig(ghn_training=dataclasses.replace(training, seed=1),
                                  finetune=ft_config("vit", init="logah")),
                      tmp_path / "t2", ghn_store=tmp_path / "ghns", train_fn=train)
    assert len(trained) == 2 and not other["ghn_reused"]


def test_a_ghn_trained_before_a_setting_existed_is_reused_under_its_own_key(tmp_path):
    """A store record written before ``layer_diversity`` existed (its config lacks the field)
    is the GHN of today's config with that setting at its default, and only of that one."""
    training = tiny_config(steps=2, checkpoint_every=2)
    trained = []

    def train(config, folder, resume):
        trained.append(folder)
        return train_ghn(config, folder, resume=resume, progress=False)

    first = run_trial(TrialConfig(ghn_training=training, finetune=ft_config("vit", init="logah")),
                      tmp_path / "t0", ghn_store=tmp_path / "ghns", train_fn=train)
    old_key = "0123456789abcdef"            # what an older version's hash gave
    (tmp_path / "ghns" / first["ghn_key"]).rename(tmp_path / "ghns" / old_key)
    record_file = tmp_path / "ghns" / old_key / "store.json"
    record = json.loads(record_file.read_text())
    del record["config"]["layer_diversity"]
    record_file.write_text(json.dumps({**record, "key": old_key}))
    again = run_trial(TrialConfig(ghn_training=training, finetune=ft_config("vit", init="logah")),
                      tmp_path / "t1", ghn_store=tmp_path / "ghns", train_fn=train)
    assert len(trained) == 1 and again["ghn_reused"] and again["ghn_key"] == old_key
    diverse = run_trial(TrialConfig(ghn_training=dataclasses.replace(training, layer_diversity=1.0),
                                    finetune=ft_config("vit", init="logah")),
                        tmp_path / "t2", ghn_store=tmp_path / "ghns", train_fn=train)
    assert len(trained) == 2 and not diverse["ghn_reused"]


def test_trial_with_a_baseline_init_trains_no_ghn(tmp_path):
    summary = run_trial(TrialConfig(finetune=ft_config("vit", init="random")), tmp_path / "t")
    assert not (tmp_path / "t" / "ghn").exists() and "final_val_accuracy" in summary
    with pytest.raises(LogahError, match="low-rank decoder"):
        run_trial(TrialConfig(ghn_training=tiny_config(ghn=get_preset("ghn3-test")),
                              finetune=ft_config("vit", init="logah")), tmp_path / "bad")


def test_cli_finetune_writes_metrics_and_weights(ghns, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--target", "vit-cpu-target", "--init", "logah", "--ghn",
                 str(ghns["vit", "low-rank"]), "--data", "digits", "--steps", "2",
                 "--eval-every", "1", "--eval-batches", "1", "--batch-size", "16",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "final_val_accuracy" in captured.out and "test_accuracy" in captured.out
    # progress to a file or pipe: plain lines, no carriage-return bar
    assert "fine-tune (logah): 2/2 (100%)" in captured.err and "\r" not in captured.err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4   # step 0, 1, 2, test
    arch, _ = load_finetuned(out)
    assert arch.hidden_dim == 96 and arch.num_classes == 10
    bad = tmp_path / "bad"
    assert main(["finetune", "--target", "vit-cpu-target", "--init", "logah", "--out", str(bad)]) == 2
    assert main(["finetune", "--target", "nope", "--out", str(bad)]) == 2
    assert main(["finetune", "--target", "gpt2-cpu-target", "--data", "digits",
                 "--out", str(bad)]) == 2
    assert not bad.exists()


def test_a_predicted_folder_is_an_init_for_its_own_architecture_only(tmp_path):
    from conftest import WIDE_VIT
    from logah.ghn import build_ghn
    from logah.predict import save_prediction

    ghn = build_ghn(get_preset("logah-test"))
    save_prediction(SMALL_VIT, predict_params(ghn, SMALL_VIT), tmp_path / "pred")
    model = initial_model(SMALL_VIT, str(tmp_path / "pred"))
    torch.testing.assert_close(dict(model.named_parameters())["conv_proj.weight"].detach(),
                               predict_params(ghn, SMALL_VIT)["conv_proj.weight"])
    summary = finetune(ft_config("vit", init=str(tmp_path / "pred")), tmp_path / "run", progress=False)
    assert math.isfinite(summary["final_val_accuracy"])
    with pytest.raises(LogahError, match="not the target"):
        initial_model(WIDE_VIT, str(tmp_path / "pred"))


def test_evaluate_gives_the_zero_shot_metric_of_a_fine_tuning_run(ghns, tmp_path, capsys):
    """``logah evaluate`` reports what step 0 of a fine-tuning run reports, on any split."""
    ghn = str(ghns["vit", "low-rank"])
    summary = finetune(ft_config("vit", init="logah", ghn=ghn), tmp_path / "run", progress=False)
    args = ["evaluate", "--target", str(tmp_path / "target.json"), "--ghn", ghn, "--data", "digits",
            "--batch-size", str(DIGITS.batch_size), "--eval-batches", str(DIGITS.eval_batches)]
    (tmp_path / "target.json").write_text(json.dumps(arch_to_dict(SMALL_VIT)))
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["val_accuracy"] == pytest.approx(summary["zero_shot_val_accuracy"])
    assert main(args[:-2] + ["--split", "test"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert 0 <= test["test_accuracy"] <= 1 and "val_accuracy" not in test
    assert main(["evaluate", "--target", "gpt2-cpu-target", "--init", "random",
                 "--split", "dev"]) == 2
    assert "split" in capsys.readouterr().err
