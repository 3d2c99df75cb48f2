"""One unlearning method on two CPU processes (torchrun, gloo): both ranks end with
identical weights and the forget set unlearned.

One torchrun launch runs every setting the tests need, one after the other in the same two
processes (each from the checkpoint on disk, in its own folder): the launch, not the unlearning,
is what costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from unpact import load_model
    from unpact.data import QAItem
    from unpact.models import hf_state_dict
    from unpact.scoring import answer_logprobs
    from unpact.unlearning import unlearn

    model_dir, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    forget = [QAItem(f"Where was the author Ana Lind {i} born?", "Lima") for i in range(4)]
    retain = [QAItem(f"What is {i} + 3?", str(i + 3)) for i in range(4)]
    prompts = [f"Question: {it.question}\\nAnswer:" for it in forget]
    for name, extra in json.loads(sys.argv[3]).items():  # each setting: its folder, the model read afresh
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        model = load_model(model_dir)
        before = float(answer_logprobs(model, prompts, [" Lima"] * 4).mean())
        res = unlearn(model, "ga_gdr", forget, retain, {"steps": 4, "batch_size": 4, "lr": 1e-3, **extra}, seed=0)
        after = float(answer_logprobs(res.model, prompts, [" Lima"] * 4).mean())
        save_file({k: v.detach().clone().contiguous() for k, v in hf_state_dict(res.model).items()}, os.path.join(folder, f"rank{rank}.safetensors"))
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump({"before": before, "after": after, "world": int(os.environ["WORLD_SIZE"]),
                       "losses": res.losses, "stopped": res.stopped_early}, f)
    """
)


#: the settings of the one torchrun launch: the plain run, and token-budget micro-batches
SETTINGS = {"plain": {}, "micro": {"max_batch_tokens": 16}}


@pytest.fixture(scope="module")
def launched(tiny_dirs, tmp_path_factory):
    """One torchrun launch of two CPU processes over every setting; its output folder and result."""
    out = tmp_path_factory.mktemp("ddp")
    script = out / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(  # torchrun of this interpreter (a `torchrun` on PATH may belong to another Python)
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            tiny_dirs["gpt2"],
            str(out),
            json.dumps(SETTINGS),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out, proc


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(launched):
    out, proc = launched
    folder = out / "plain"
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [lg["world"] for lg in logs] == [2, 2]
    assert logs[0]["losses"] == logs[1]["losses"]  # losses are reduced across ranks
    a = load_file(str(folder / "rank0.safetensors"))
    b = load_file(str(folder / "rank1.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for lg in logs:
        assert not lg["stopped"]
        assert lg["after"] < lg["before"] - 0.05  # the forget answers lost probability on both ranks


@pytest.mark.slow
def test_two_cpu_processes_with_micro_batches_equal_one_process_one_pass(launched, tiny_dirs):
    """DDP with token-budget micro-batches (gradients kept local until the last one, one
    all-reduce per step) gives the update of one process taking the whole batch at once."""
    from unpact import load_model
    from unpact.data import QAItem
    from unpact.models import hf_state_dict
    from unpact.unlearning import unlearn

    out, proc = launched
    folder = out / "micro"
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(str(folder / "rank0.safetensors"))
    b = load_file(str(folder / "rank1.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    forget = [QAItem(f"Where was the author Ana Lind {i} born?", "Lima") for i in range(4)]
    retain = [QAItem(f"What is {i} + 3?", str(i + 3)) for i in range(4)]
    one = unlearn(
        load_model(tiny_dirs["gpt2"]), "ga_gdr", forget, retain, {"steps": 4, "batch_size": 4, "lr": 1e-3}, seed=0
    )
    ref = {k: v.detach() for k, v in hf_state_dict(one.model).items()}
    assert max(float((a[k] - ref[k]).abs().max()) for k in a) < 1e-5
