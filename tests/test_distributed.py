"""One unlearning method on two CPU processes (torchrun, gloo): both ranks end with
identical weights and the forget set unlearned."""

from __future__ import annotations

import os
import shutil
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
    model = load_model(model_dir)
    prompts = [f"Question: {it.question}\\nAnswer:" for it in forget]
    before = float(answer_logprobs(model, prompts, [" Lima"] * 4).mean())
    res = unlearn(model, "ga_gdr", forget, retain, {"steps": 4, "batch_size": 4, "lr": 1e-3}, seed=0)
    after = float(answer_logprobs(res.model, prompts, [" Lima"] * 4).mean())
    save_file({k: v.detach().clone().contiguous() for k, v in hf_state_dict(res.model).items()}, os.path.join(out, f"rank{rank}.safetensors"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"before": before, "after": after, "world": int(os.environ["WORLD_SIZE"]),
                   "losses": res.losses, "stopped": res.stopped_early}, f)
    """
)


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(tiny_dirs, tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun is not installed")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(script), tiny_dirs["gpt2"], str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [lg["world"] for lg in logs] == [2, 2]
    assert logs[0]["losses"] == logs[1]["losses"]  # losses are reduced across ranks
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for lg in logs:
        assert not lg["stopped"]
        assert lg["after"] < lg["before"] - 0.05  # the forget answers lost probability on both ranks
