"""On-policy sampling settings: ``sample_top_p`` reaches the student's samples, and sampling
settings on a train that samples nothing are an error (KD0322)."""

from __future__ import annotations

import pytest

from kdlang.check import check_files
from tests.runtime.train.support import write_recipe

pytestmark = pytest.mark.timeout(120)


def test_a_tiny_nucleus_samples_the_most_likely_token_whatever_the_seed(tiny_pair):
    import torch
    from kdlang.runtime.train.examples import Example
    from kdlang.runtime.train.onpolicy import sample_targets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_pair.student)
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.student)
    prompt = tokenizer("What is two plus three?")["input_ids"]
    examples = [Example(prompt=prompt, target=[], row=r) for r in range(6)]

    def targets(top_p: float, seed: int) -> list[list[int]]:
        sampled = sample_targets(
            model, tokenizer, examples, seed=seed, step=0, temperature=1.0,
            max_new_tokens=8, batch_size=6, top_p=top_p,
        )  # fmt: skip
        return [e.target for e in sampled]

    # The nucleus of mass 1e-6 is the top token alone: every row, every seed, the greedy path.
    narrow = targets(1e-6, seed=1)
    assert all(t == narrow[0] for t in narrow) and targets(1e-6, seed=2) == narrow
    with torch.no_grad():
        greedy = model.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )[0, len(prompt):].tolist()  # fmt: skip
    assert narrow[0] == greedy[: len(narrow[0])]
    # The whole distribution: rows with their own seeds do not all write the same
    wide = targets(1.0, seed=1)
    assert len({tuple(t) for t in wide}) > 1


@pytest.mark.parametrize(
    "setting", ["sample_top_p = 0.9", "sample_temperature = 0.7", "max_new_tokens = 8"]
)
def test_sampling_settings_without_on_policy_steps_are_an_error(tmp_path, tiny_pair, setting):
    body = (
        f'model student = hf("{tiny_pair.student}")\n'
        'dataset rows = inline([{q: "a", a: "b"}])\n'
        f"train t {{\n  student = student  data = rows  target = a  {setting}\n  loss sft weight 1.0\n}}\n"
    )
    diagnostics, _ = check_files([str(write_recipe(tmp_path, body))])
    (d,) = [d for d in diagnostics if d.severity.name == "ERROR"]
    name = setting.split(" =")[0]
    assert (d.code, d.span.line) == ("KD0322", 7)
    assert d.message == (
        f"`{name}` shapes the student's on-policy samples, but this train samples none "
        "(`on_policy` is 0)"
    )
    with_policy = body.replace(setting, setting + "  on_policy = 0.5  teacher = student")
    (tmp_path / "recipe.kd").write_text(
        (tmp_path / "recipe.kd").read_text().split("model")[0] + with_policy
    )
    diagnostics, _ = check_files([str(tmp_path / "recipe.kd")])
    assert "KD0322" not in {d.code for d in diagnostics}
