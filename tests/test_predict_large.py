"""A real Llama shape streamed into safetensors shards: SmolLM2-135M's shape, predicted by an
untrained ``logah-t`` in bfloat16 through ``predict_to_folder`` (what ``logah predict`` runs) in
a fresh process. Its peak resident memory stays within a small multiple of the largest tensor
above the interpreter's own baseline (a prediction held whole in memory would not), and the
shards' index lists Hugging Face's parameters with Hugging Face's shapes.

The full-size measurement (TinyLlama-1.1B against Hugging Face's init, Llama-3.1-8B under 4 GiB)
is ``benchmarks/predict_large.py``."""

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
SHARD_BYTES = 64 * MIB     # several shards and an index for a 257 MiB output
# SmolLM2-135M's published config (HuggingFaceTB/SmolLM2-135M, config.json): the fields that fix
# the parameters. The reference model is built from these, not from logah's own config.
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
           "tie_word_embeddings": True}
# Peak RSS allowed above the resident set after the imports, in float32 copies of the largest
# tensor (the embedding, 49152 x 576 = 113 MB). Measured on the 2-core development machine:
# 2.73-2.75 in three runs, ~295 MiB above ~752 MiB (GHN, graph, the decoder's factors, one
# 64 MB row block of a product and its bfloat16 cast); the whole prediction held in memory would
# add 4.8 of them (538 MB in float32) at least.
MAX_LARGEST_MULTIPLE = 4.0

CHILD = r"""
import json, re, sys

def status(field):
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1)) * 1024

import torch  # the imports logah predict makes, before the baseline is read
from transformers import LlamaForCausalLM
from logah.checkpoint import resolve_ghn
from logah.graph import graph_of
from logah.predict import predict_to_folder
from logah.targets import resolve_target

rss_after_imports, peak_imports = status("VmRSS"), status("VmHWM")
ghn = resolve_ghn("logah-t")
written = predict_to_folder(ghn, resolve_target("smollm2-135m"), sys.argv[1], dtype="bfloat16",
                            max_shard_bytes=int(sys.argv[2]))
print(json.dumps({"rss_after_imports": rss_after_imports, "peak_imports": peak_imports,
                  "peak": status("VmHWM"), "num_params": written.num_params,
                  "bytes_written": written.bytes_written}))
"""


def _header(path: Path) -> dict:
    """A safetensors file's header, without reading its tensors."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


@pytest.mark.slow
def test_smollm2_streamed_in_bfloat16_stays_small_and_matches_hugging_face(tmp_path):
    import torch
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    out = tmp_path / "smollm2"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    run = subprocess.run([sys.executable, "-c", CHILD, str(out), str(SHARD_BYTES)],
                         capture_output=True, text=True, timeout=900, cwd=ROOT, env=env,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    mem = json.loads(run.stdout.strip().splitlines()[-1])

    with torch.device("meta"):
        reference = LlamaForCausalLM(LlamaConfig(**SMOLLM2))
    hf_shapes = {name: list(p.shape) for name, p in reference.named_parameters()}
    largest = max(math.prod(s) for s in hf_shapes.values()) * 4     # float32, as computed

    # memory: the interpreter's own baseline plus a small multiple of the largest tensor
    above = mem["peak"] - mem["rss_after_imports"]
    assert mem["peak"] >= mem["peak_imports"]
    assert above <= MAX_LARGEST_MULTIPLE * largest, (
        f"peak RSS {mem['peak'] / MIB:.0f} MiB is {above / MIB:.0f} MiB above the "
        f"{mem['rss_after_imports'] / MIB:.0f} MiB after the imports: "
        f"{above / largest:.2f} x the largest tensor (bound {MAX_LARGEST_MULTIPLE})")

    # the index lists exactly Hugging Face's parameters, the shard headers their shapes
    index = json.loads((out / "model.safetensors.index.json").read_text())
    weight_map = index["weight_map"]
    assert set(weight_map) == set(hf_shapes)
    shards = sorted(set(weight_map.values()))
    assert len(shards) >= 4 and all(s.startswith("model-") for s in shards)
    shapes, dtypes = {}, set()
    for shard in shards:
        header = _header(out / shard)
        assert set(header) == {n for n, s in weight_map.items() if s == shard}
        shapes.update({name: info["shape"] for name, info in header.items()})
        dtypes.update(info["dtype"] for info in header.values())
    assert shapes == hf_shapes
    assert dtypes == {"BF16"}
    numel = sum(math.prod(s) for s in shapes.values())
    assert numel == reference.num_parameters() == mem["num_params"] == 134_515_008
    assert index["metadata"]["total_size"] == 2 * numel

    # the folder's config is Hugging Face's, with the published shape
    config = AutoConfig.from_pretrained(out)
    assert isinstance(config, LlamaConfig)
    assert {k: getattr(config, k) for k in SMOLLM2} == SMOLLM2
