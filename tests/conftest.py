"""Shared small targets and GHNs. Real torchvision / Hugging Face modules, tiny sizes."""

import os
import signal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Tests stop the runs they start with SIGINT (Ctrl-C). A shell that runs the suite in the
# background (`make test &`) starts it with SIGINT ignored, which every child would inherit, and
# Python does not turn an ignored SIGINT into KeyboardInterrupt: give it a handler here, which
# the children's exec resets to the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402

from logah.ghn import build_ghn  # noqa: E402
from logah.presets import get_preset  # noqa: E402
from logah.families.gpt2 import GPT2Arch  # noqa: E402
from logah.families.llama import LlamaArch  # noqa: E402
from logah.families.vit import ViTArch  # noqa: E402

SMALL_VIT = ViTArch(num_layers=2, hidden_dim=32, num_heads=2, mlp_dim=64, image_size=16,
                    patch_size=4, num_classes=10)
WIDE_VIT = ViTArch(num_layers=3, hidden_dim=48, num_heads=4, mlp_dim=96, image_size=16,
                   patch_size=2, num_classes=10)
SMALL_GPT = GPT2Arch(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64)
TIED_GPT = GPT2Arch(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
                    tie_word_embeddings=True)

SMALL_LLAMA = LlamaArch(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=80, vocab_size=100,
                        max_position_embeddings=64)
TIED_LLAMA = LlamaArch(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                       num_key_value_heads=4, intermediate_size=64, vocab_size=100,
                       max_position_embeddings=64, tie_word_embeddings=True)
SMALL_TARGETS = {"vit": SMALL_VIT, "gpt2": SMALL_GPT, "llama": SMALL_LLAMA}


@pytest.fixture(params=["logah-test", "ghn3-test"])
def ghn(request):
    """An untrained GHN of each decoder kind, seeded."""
    return build_ghn(get_preset(request.param), seed=0)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """A real study on an embedded local Ray: the rank sweep's smoke preset (ranks 2 and 8) with
    fine-tuning batch sizes 32 and 100 000 swept in (the second fails in every trial), run once
    per test session in its own process. Yields the study folder; what the study printed is
    in ``terminal.txt`` beside it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    storage = tmp_path_factory.mktemp("studies")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, str(root / "studies" / "rank_sweep.py"), "--preset",
                          "smoke", "--storage", str(storage), "--name", "smoke",
                          "--sweep", "finetune.data.batch_size=32,100000"],
                         capture_output=True, text=True, timeout=1200, env=env)
    (storage / "terminal.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]   # 2 trials failed
    assert run.stderr.strip().splitlines()[-1] == ("rank_sweep: 2 of 4 trials failed (see the "
                                                   "report; --resume runs them again)")
    return storage / "smoke"


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server on loopback for this module, deleted afterwards."""
    from postgres_server import PostgresServer

    with PostgresServer() as url:
        yield url
