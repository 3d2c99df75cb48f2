import torch

torch.set_num_threads(1)
from unpact import load_model, scoring
from unpact.testing import make_tiny_checkpoint
from unpact.attribution import attribute, key_tokens, compare
from unpact.data import QAItem

facts = [
    QAItem("Where was the author Ana Lind born?", "Lima", id="ana", meta={"group": "forget"}),
    QAItem("Where was the author Bo Reyes born?", "Paris", id="bo", meta={"group": "retain"}),
    QAItem("What genre does Ana Lind write?", "crime fiction", id="ana-genre", meta={"group": "forget"}),
    QAItem("What genre does Bo Reyes write?", "poetry", id="bo-genre", meta={"group": "retain"}),
]
corpus = [f"Question: {f.question}\nAnswer: {f.answer}" for f in facts]
model = load_model(make_tiny_checkpoint("gpt2", "/tmp/unpact-attribution-example", corpus=corpus, d_model=64))
seqs = scoring.encode_many(model, *zip(*[("Question: " + f.question + "\nAnswer:", " " + f.answer) for f in facts]))
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
torch.manual_seed(0)
for step in range(60):  # teach the four facts (a few seconds)
    loss = -scoring.score_sequences(model, seqs, grad=True).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()

a = attribute(model, facts[0], method="loo")
print(f"LP = {a.lp:.4f}")
for t, s, sp in zip(a.tokens, a.scores, a.special):
    print(f"{t!r:>16} {s:+.4f} {'(special)' if sp else ''}")
print("KeyTokens:", [a.tokens[i] for i in key_tokens(a)])

ig = attribute(model, facts[0], method="integrated_gradients", steps=64)
print(
    "IG top:",
    [(t, round(s, 3)) for t, s in ig.top(3)],
    f"completeness gap {ig.extras['completeness_gap']:.2e} ({100 * ig.extras['relative_gap']:.3f}% of LP(x) - LP(baseline))",
)

h = attribute(model, facts[0], method="heads")
print(
    "heads: mean answer logit",
    round(h.extras["answer_logit"], 3),
    "| attention total per layer",
    [round(x, 3) for x in h.extras["attn_total"]],
    "| MLP total per layer",
    [round(x, 3) for x in h.extras["mlp_total"]],
)

# "unlearning" stand-in: a few steps of gradient ascent on the forget facts
before = attribute(model, facts, method="loo")
forget = [s for s, f in zip(seqs, facts) if f.meta["group"] == "forget"]
for step in range(10):
    loss = scoring.score_sequences(model, forget, grad=True).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
after = attribute(model, facts, method="loo")
cmp = compare(before, after)
for g, s in cmp.summary["by_group"].items():
    print(g, {k: round(v, 4) for k, v in s.items() if isinstance(v, float)})
