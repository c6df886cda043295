"""Architecture spaces: paper presets, determinism, storage, impossible spaces, buildability."""

from __future__ import annotations

import dataclasses
import json

import pytest

from logah.archs import (HELD_OUT_POOL, SPACES,
                         arch_params, describe_archs, format_description, get_space, load_archs,
                         sample_archs, sample_held_out, save_archs, space_from_dict, space_to_dict)
from logah.errors import LogahError
from logah.families import FAMILIES, family_of, panels
from logah.graph import build_graph
from logah.families.gpt2 import GPT2Arch, GPT2Space
from logah.families.vit import ViTArch, ViTSpace
from logah.spaces import WidthBand
from logah.targets import (NAMED_TARGETS, arch_to_dict, build_model,
                           count_params)


def distinct(archs):
    return list({json.dumps(arch_to_dict(a), sort_keys=True): a for a in archs}.values())


@pytest.fixture(scope="module")
def samples():
    return {name: sample_archs(name) for name in SPACES}


def test_vits_1k_follows_the_paper(samples):
    archs = samples["vits-1k"]
    assert len(archs) == 1000 and all(isinstance(a, ViTArch) for a in archs)
    assert {a.num_layers for a in archs} == set(range(3, 10))
    bands = {range(6, 10): range(128, 257, 32), range(4, 6): range(256, 385, 32), range(3, 4): range(384, 513, 32)}
    for a in archs:
        widths = next(w for d, w in bands.items() if a.num_layers in d)
        assert a.hidden_dim in widths
        allowed = {3, 6, 12} if a.hidden_dim % 12 == 0 else {4, 8}  # multiples of 32: 12 or else
        assert a.num_heads in allowed
        assert (a.mlp_dim, a.patch_size, a.image_size, a.num_classes) == (4 * a.hidden_dim, 2, 32, 100)
    params = [arch_params(a) for a in archs]
    assert 1_200_000 <= min(params) and max(params) <= 9_700_000
    assert min(params) == 1_237_476 and max(params) == 9_648_228  # L6/D128 and L3/D512 are drawn
    # every heads choice of the rule is used somewhere
    assert {a.num_heads for a in archs} == {3, 4, 6, 8, 12}


def test_gpts_1k_follows_the_paper(samples):
    archs = samples["gpts-1k"]
    assert len(archs) == 1000 and all(isinstance(a, GPT2Arch) for a in archs)
    assert {a.n_layer for a in archs} == set(range(3, 10))
    assert {a.n_head for a in archs} == {8}
    assert all(not a.tie_word_embeddings and a.vocab_size == 50257 and a.n_positions == 1024 for a in archs)
    assert all(a.n_embd % 8 == 0 for a in archs)
    assert all((72 if a.n_layer >= 6 else 128 if a.n_layer >= 4 else 176) <= a.n_embd
               <= (176 if a.n_layer >= 4 else 256) for a in archs)
    params = [arch_params(a) for a in archs]
    assert 7_600_000 <= min(params) < 7_800_000 and 28_300_000 < max(params) <= 28_400_000


def test_sampling_is_deterministic_in_the_seed(samples):
    for name in SPACES:
        assert sample_archs(name) == samples[name]                      # default seed 1
        assert sample_archs(name, seed=1) == samples[name]
        assert sample_archs(name, seed=2) != samples[name]
    assert sample_archs("vits-1k", n=10) == samples["vits-1k"][:10]      # a prefix of the stream
    assert sample_archs(get_space("vits-1k", seed=7)) == sample_archs("vits-1k", seed=7)


def test_analytic_param_counts_match_the_built_modules(samples):
    picks = [a for name in SPACES for a in distinct(samples[name])[:6]]
    picks += list(NAMED_TARGETS.values())
    picks.append(GPT2Arch(n_layer=2, n_embd=32, n_head=4, vocab_size=100, tie_word_embeddings=True))
    picks.append(ViTArch(num_layers=1, hidden_dim=24, num_heads=3, mlp_dim=50, image_size=28,
                         patch_size=7, num_classes=3))
    for arch in picks:
        assert arch_params(arch) == count_params(arch), arch


def test_every_sampled_architecture_builds(samples):
    for name in SPACES:
        for arch in distinct(samples[name]):    # duplicates add nothing; all configurations built
            model = build_model(arch, "meta")
            assert sum(p.numel() for p in model.parameters()) == arch_params(arch)


def test_graphs_build_for_sampled_architectures(samples):
    for name in SPACES:
        for arch in samples[name][:20]:
            g = build_graph(build_model(arch, "meta"), arch)
            assert "msa" in g.ops and g.ops.count("msa") == arch.depth == g.n_layer


@pytest.mark.parametrize("family", FAMILIES.values(), ids=list(FAMILIES))
def test_cpu_spaces_are_small_and_cpu_targets_are_larger_than_them(samples, family):
    space = get_space(family.scales["cpu"].space)
    archs = samples[space.name]
    assert max(arch_params(a) for a in archs) < 1_000_000
    assert space.depth_min == 1 and space.depth_max == 4
    widths = [w for b in space.width_bands for w in b.widths()]
    assert 10 <= min(widths) and max(widths) < 100                      # widths of tens
    main = f"{family.name}-cpu-target"
    targets = {name: family.targets[name] for name in (main, main + "-l")}
    for name, t in targets.items():
        assert t.depth > space.depth_max and t.width > max(widths), name
        assert arch_params(t) > space.max_params_in_space()
        assert family.num_outputs(t) == family.num_outputs(archs[0])   # the space's classes / vocabulary
    assert family.novelties(targets[main], space) == []     # only deeper and wider


@pytest.mark.parametrize("panel", list(panels()))
def test_panels_vary_the_shape_and_go_beyond_the_training_space(panel):
    """A panel compares inits on targets of several shapes, at least two deeper and wider than
    the family's CPU training space."""
    targets = [NAMED_TARGETS[name] for name in panels()[panel]]
    family = family_of(targets[0])
    space = get_space(family.scales["cpu"].space)
    beyond = [t for t in targets if t.depth > space.depth_max
              and t.width > max(w for b in space.width_bands for w in b.widths())]
    assert len(targets) >= 2 and len(beyond) >= 2 and {t.family for t in targets} == {family.name}
    assert len({t.depth for t in targets}) == len({t.width for t in targets}) == len(targets)
    if family.name == "vit":     # the four ViT shapes: every knob varies
        assert len(targets) >= 4
        for field in ("num_heads", "patch_size", "image_size"):
            assert len({getattr(t, field) for t in targets}) >= 3, field
        assert len({t.mlp_dim / t.hidden_dim for t in targets}) >= 3


def test_the_deep_cpu_space_covers_every_depth_of_the_vit_panel(samples):
    """``vits-cpu-deep`` is the lever "a training space as deep as the panel": every depth a
    panel target has is drawn, and otherwise it is ``vits-cpu`` (same images, patches, classes)."""
    deep, cpu = get_space("vits-cpu-deep"), get_space("vits-cpu")
    drawn = {a.num_layers for a in samples["vits-cpu-deep"]}
    for name in panels()["vit-cpu-panel"]:
        assert NAMED_TARGETS[name].depth in drawn, name
    for field in ("image_size", "patch_sizes", "num_classes", "mlp_ratio", "heads_rule"):
        assert getattr(deep, field) == getattr(cpu, field), field
    assert max(arch_params(a) for a in samples["vits-cpu-deep"]) <= deep.max_params


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_save_and_load_round_trip(tmp_path, samples, suffix):
    archs = samples["vits-cpu"][:30] + samples["gpts-cpu"][:30]            # mixed families
    path = save_archs(tmp_path / f"archs{suffix}", archs)
    assert load_archs(path) == archs
    assert [p.name for p in tmp_path.iterdir()] == [path.name]            # no temp file left
    if suffix == ".json":
        records = json.loads(path.read_text())
        assert records[0]["family"] == "vit" and records[-1]["family"] == "gpt2"


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(LogahError, match="not found"):
        load_archs(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(LogahError, match="not valid JSON"):
        load_archs(bad)
    bad.write_text(json.dumps([{"family": "vit", "num_layers": 2, "hidden_dim": 30, "num_heads": 4,
                                "mlp_dim": 8}]))
    with pytest.raises(LogahError, match="num_heads=4 does not divide"):
        load_archs(bad)
    with pytest.raises(LogahError, match=r"\.json or \.parquet"):
        save_archs(tmp_path / "archs.pkl", [])


def test_describe(samples):
    desc = describe_archs(samples["vits-1k"])
    assert desc["count"] == 1000 and (desc["depth_min"], desc["depth_max"]) == (3, 9)
    assert desc["params_min"] == 1_237_476 and desc["params_max"] == 9_648_228
    assert desc["params_min"] <= desc["params_median"] <= desc["params_max"]
    assert sum(desc["depth_hist"].values()) == 1000 and set(desc["depth_hist"]) == set(range(3, 10))
    assert sum(desc["heads_hist"].values()) == sum(desc["width_hist"].values()) == 1000
    assert desc["patch_hist"] == {2: 1000}
    assert 1 < desc["distinct"] < 1000
    json.loads(json.dumps(desc))                                             # JSON-ready
    text = format_description(desc)
    assert "1000 architectures" in text and "9,648,228" in text and "depth:" in text


@pytest.mark.parametrize("overrides, message", [
    (dict(depth_min=5, depth_max=4), "empty depth range"),
    (dict(width_bands=(WidthBand(depth_min=3, depth_max=9, width_min=256, width_max=128, width_step=32),)),
     "empty depth or width range"),
    (dict(width_bands=(WidthBand(depth_min=3, depth_max=9, width_min=128, width_max=256, width_step=0),)),
     "width_step"),
    (dict(width_bands=(WidthBand(depth_min=6, depth_max=9, width_min=128, width_max=256, width_step=32),)),
     "width_bands must cover"),
    (dict(width_bands=()), "width_bands is empty"),
    (dict(max_params=1_000_000), "max_params=1,000,000 is below the smallest model"),
    (dict(heads_rule=((1, (1000,)),)), "heads_rule .* divides no width"),
    (dict(heads_rule=((1, (13,)),)), "heads_rule .* divides no width"),  # only in some bands
    (dict(heads_rule=()), "heads_rule"),
    (dict(patch_sizes=(3,)), "patch_sizes"),
    (dict(patch_sizes=()), "patch_sizes"),
    (dict(mlp_ratio=0), "mlp_ratio"),
    (dict(num_archs=0), "num_archs"),
    (dict(image_size=-32), "image_size"),
    (dict(seed=None), "seed"),
])
def test_impossible_vit_spaces_name_the_setting(overrides, message):
    with pytest.raises(LogahError, match=message):
        get_space("vits-1k", **overrides)


def test_impossible_gpt2_spaces_and_bad_names():
    with pytest.raises(LogahError, match="max_params"):
        get_space("gpts-1k", max_params=5_000_000)          # the embeddings alone are bigger
    with pytest.raises(LogahError, match="heads_rule"):
        get_space("gpts-1k", heads_rule=((1, (1000,)),))
    with pytest.raises(LogahError, match="vocab_size"):
        get_space("gpts-1k", vocab_size=0)
    with pytest.raises(LogahError, match="unknown architecture space 'nope'.*gpts-1k"):
        get_space("nope")
    with pytest.raises(LogahError, match="unknown settings"):
        get_space("gpts-1k", patch_sizes=(2,))
    with pytest.raises(LogahError, match="positive integer"):
        sample_archs("gpts-cpu", n=0)


# Distinct configurations that a second draw of 10 x num_archs finds outside the training list
# (seed 1): the paper spaces and gpts-cpu have none to spare, vits-cpu has 22, vits-cpu-deep (ten
# depths) 83; the Llama spaces (which also draw KV heads, MLP ratio and tying) have far more
# configurations than draws.
UNSEEN = {"vits-1k": 0, "gpts-1k": 0, "vits-cpu": 22, "vits-cpu-deep": 83, "gpts-cpu": 0,
          "llamas-1k": 122, "llamas-cpu": 337}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_held_out_architectures_are_absent_from_the_training_list(samples, name):
    training = samples[name]
    held_out = sample_held_out(name, training, n=4, seed=1_000_004)
    assert len(held_out) == min(4, UNSEEN[name])
    assert not set(held_out) & set(training) and len(set(held_out)) == len(held_out)
    everything = sample_held_out(name, training, n=10**6, seed=1_000_004)
    assert len(everything) == UNSEEN[name] and held_out == everything[:len(held_out)]
    # deterministic, and drawn from the space's own distribution with the given seed
    assert sample_held_out(name, training, n=4, seed=1_000_004) == held_out
    pool = sample_archs(name, n=HELD_OUT_POOL * len(training), seed=1_000_004)
    assert set(everything) == set(pool) - set(training)


def test_held_out_architectures_are_compared_as_fitted():
    """Records are compared after ``fit`` (as a task will train them), and none is left when
    every configuration is in the training list."""
    space = get_space("vits-cpu", num_archs=20)
    training = sample_archs(space)
    fit = lambda arch: dataclasses.replace(arch, num_classes=7)  # noqa: E731
    trained = [fit(a) for a in training]
    held_out = sample_held_out(space, trained, n=1000, seed=9, fit=fit)
    assert held_out and all(a.num_classes == 7 for a in held_out)
    assert held_out == [fit(a) for a in sample_held_out(space, training, n=1000, seed=9)]
    assert not set(held_out) & set(trained)
    one_config = get_space("gpts-cpu", depth_min=2, depth_max=2, num_archs=10,
                           width_bands=[(2, 2, 32, 32, 8)])
    assert sample_held_out(one_config, sample_archs(one_config), n=4, seed=3) == []
    assert sample_held_out(one_config, [], n=0, seed=3) == []
    with pytest.raises(LogahError, match="non-negative"):
        sample_held_out(one_config, [], n=-1, seed=3)


def test_cap_rejection_sampling():
    capped = get_space("vits-1k", max_params=5_000_000)
    archs = sample_archs(capped, n=300)
    assert len(archs) == 300 and max(arch_params(a) for a in archs) <= 5_000_000
    assert max(arch_params(a) for a in sample_archs("vits-1k", n=300)) > 5_000_000
    # a cap that accepts ~1 draw in 10,000 fails after a bounded number of draws, with a message
    wide = ViTSpace(name="wide", depth_min=1, depth_max=100, heads_rule=((1, (1,)),),
                    width_bands=(WidthBand(depth_min=1, depth_max=100, width_min=16, width_max=1600,
                                           width_step=16),), patch_sizes=(4,), max_params=None)
    tight = dataclasses.replace(wide, max_params=wide.min_params())
    with pytest.raises(LogahError, match="rejects too many"):
        sample_archs(tight, n=10)


def test_spaces_round_trip_and_sweep():
    for name in SPACES:
        space = get_space(name)
        record = json.loads(json.dumps(space_to_dict(space)))
        assert space_from_dict(record) == space
    deeper = get_space("gpts-cpu", depth_max=6, width_bands=[(1, 2, 32, 64, 8), (3, 6, 16, 48, 8)])
    assert isinstance(deeper, GPT2Space) and deeper.width_bands[1].depth_max == 6
    assert max(a.n_layer for a in sample_archs(deeper, n=200)) == 6
