"""``expand``: self_instruct and evol_instruct against a scripted server, and the item parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kdlang.runtime.stages.expand import (
    EVOL_PROMPT,
    OPERATIONS,
    SELF_INSTRUCT_PROMPT,
    normalize,
    parse_item,
    rejection,
)

from tests.fixtures.openai_server import FakeOpenAIServer, Fault, ScriptedModel
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_model,
    node,
    plan,
    row_seed,
    rows,
    run_recipe,
    write_recipe,
)

pytestmark = pytest.mark.timeout(60)

SEEDS = ["Name a fruit.", "What is 2 + 2?", "Translate 'cat' to French."]
SEED_DATA = "dataset seeds = inline([" + ", ".join(f'{{q: "{s}"}}' for s in SEEDS) + "])\n"


# ---------------------------------------------------------------- parsing and rejection


@pytest.mark.parametrize(
    ("response", "item"),
    [
        ("1. Write a poem about rain.", "Write a poem about rain."),
        ("  (4) List three primes.\n", "List three primes."),
        ('"Task 4: Explain tides."', "Explain tides."),
        ("New instruction: 'Sort a list.'\n\nThis item asks for sorting.", "Sort a list."),
        ("#Rewritten Prompt#: Why is the sky blue?", "Why is the sky blue?"),
        ("- \u201cName a river.\u201d", "Name a river."),
        ("2.5 litres of water: how many cups?", "2.5 litres of water: how many cups?"),
        ("Question-answering: what is it?", "Question-answering: what is it?"),
        ("   \n  ", ""),
    ],
)
def test_parse_item_strips_numbering_labels_quotes_and_keeps_the_first_paragraph(response, item):
    assert parse_item(response) == item


def test_rejection_reasons():
    seen = {normalize("Name a fruit.")}
    assert rejection("", seen) == "empty"
    assert rejection("I'm sorry, but I cannot help with that.", seen) == "refusal"
    assert rejection("As an AI language model, I won't.", seen) == "refusal"
    assert rejection("word " * 151, seen) == "too_long"
    assert rejection("word " * 150, seen) is None
    assert rejection("name a  FRUIT!", seen) == "duplicate"
    assert rejection("Name a vegetable.", seen) is None
    assert rejection("What is 2+2 ?", seen, source="what is 2+2") == "copy"
    assert rejection("What is 2+3?", seen, source="what is 2+2") is None


def test_built_in_prompts_render_their_variables():
    from kdlang.check.sandbox import environment

    text = environment().from_string(SELF_INSTRUCT_PROMPT).render(demos=["A b.", "C d."], n=3)
    assert "1. A b.\n2. C d.\n\nWrite item 3:" in text
    text = (
        environment()
        .from_string(EVOL_PROMPT)
        .render(item="What is 2 + 2?", operation=OPERATIONS["deepen"])
    )
    assert OPERATIONS["deepen"] in text and "Item:\nWhat is 2 + 2?\n" in text


# ---------------------------------------------------------------- self_instruct


def self_instruct_recipe(tmp_path, *, n=4, demos=2, prompt=""):
    return write_recipe(
        tmp_path,
        SEED_DATA
        + api_model("api", concurrency=2, max_retries=0)
        + "\n"
        + prompt
        + f"""
stage more = expand(seeds) {{
  teacher = api  method = self_instruct  column = q  n = {n}  demos = {demos}
  {"prompt = mine" if prompt else ""}
}}
""",
    )


def scripted(replies: dict[int, str], default: str = "unused"):
    return ScriptedModel(lambda prompt, seed: replies.get(seed, default))


def test_self_instruct_parses_validates_and_tops_up_in_rounds(tmp_path, monkeypatch):
    seed = lambda i: row_seed(7, "expand", i, "self_instruct")  # noqa: E731
    replies = {
        seed(0): "1. Write a haiku about rain.",
        seed(1): "Name a fruit",  # a seed again
        seed(2): "I'm sorry, I can't help with that.",
        seed(3): '"List three prime numbers."',
        # round 2 asks for the 2 missing items
        seed(4): "",
        seed(5): "Task 6: Describe a sunset in one sentence.",
        # round 3 asks for 1; it accepts none, so expansion stops short of n
        seed(6): "write a HAIKU about rain!",
    }
    recipe = self_instruct_recipe(tmp_path)
    with FakeOpenAIServer(scripted(replies)) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    assert rows(document, "more") == [{"q": s, "origin": "seed"} for s in SEEDS] + [
        {"q": "Write a haiku about rain.", "origin": "self_instruct"},
        {"q": "List three prime numbers.", "origin": "self_instruct"},
        {"q": "Describe a sunset in one sentence.", "origin": "self_instruct"},
    ]
    stats = node(document, "more")["stats"]
    assert stats["dropped"] == {"duplicate": 2, "empty": 1, "refusal": 1}
    assert stats["rounds"] == 3 and stats["new_items"] == 3
    assert stats["teacher"]["requests"] == 7 == server.requests
    # every request showed 2 distinct seeds, numbered, and asked for item 3
    shown = []
    for body in server.bodies:
        text = body["messages"][-1]["content"]
        demos = re.findall(r"^\d\. (.*)$", text, re.MULTILINE)
        assert len(demos) == 2 and set(demos) <= set(SEEDS) and len(set(demos)) == 2
        assert "Write item 3:" in text
        shown.append(tuple(demos))
    assert len(set(shown)) > 1  # demos are sampled per request


def test_self_instruct_stops_at_n_and_drops_seeds_when_asked(tmp_path, monkeypatch):
    recipe = self_instruct_recipe(tmp_path, n=3)
    recipe.write_text(recipe.read_text().replace("demos = 2", "demos = 5  keep_seeds = false"))
    with FakeOpenAIServer(ScriptedModel(lambda prompt, s: f"Item number {s}.")) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    made = rows(document, "more")
    assert [r["q"] for r in made] == [
        f"Item number {row_seed(7, 'expand', i, 'self_instruct')}." for i in range(3)
    ]
    assert {r["origin"] for r in made} == {"self_instruct"}
    assert server.requests == 3
    # demos = 5 with 3 seeds: every seed shown once
    assert all(
        len(re.findall(r"^\d\. ", b["messages"][-1]["content"], re.MULTILINE)) == 3
        for b in server.bodies
    )


def test_self_instruct_with_the_recipes_own_prompt(tmp_path, monkeypatch):
    mine = "prompt mine = \"Examples: {{ demos | join(' | ') }}. Write #{{ n }}.{{ item }}{{ operation }}\"\n"
    recipe = self_instruct_recipe(tmp_path, n=2, prompt=mine)
    with FakeOpenAIServer(ScriptedModel(lambda prompt, s: f"New {s}")) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        run_recipe(recipe)
    for body in server.bodies:
        found = re.fullmatch(
            r"Examples: (.*) \| (.*)\. Write #3\.", body["messages"][-1]["content"]
        )
        assert found and {found[1], found[2]} <= set(SEEDS)


# ---------------------------------------------------------------- evol_instruct


def evolve_reply(plan_by_seed: dict[int, str], seen: dict[str, str]):
    """A responder that evolves the item of the prompt as ``plan_by_seed`` says:
    ``copy``, ``refuse``, ``empty`` or a suffix to append; records each result's operation."""

    def respond(prompt: str, seed: int | None) -> str:
        item = re.search(r"Item:\n(.*)\n\nReply", prompt, re.DOTALL)[1]
        operation = next(name for name, text in OPERATIONS.items() if text in prompt)
        action = plan_by_seed[seed]
        if action == "copy":
            return item
        if action == "refuse":
            return "I cannot do that."
        if action == "empty":
            return "  "
        result = f"{item} {action}"
        seen[result] = operation
        return f"Rewritten item: {result}"

    return respond


def test_evol_instruct_evolves_chains_and_rejects_copies_refusals_and_empty(tmp_path, monkeypatch):
    seed = lambda chain, r: row_seed(7, "expand", chain, f"evol-{r}")  # noqa: E731
    actions = {
        seed(0, 1): "copy",
        seed(1, 1): "Answer in French.",
        seed(2, 1): "refuse",
        seed(0, 2): "Show your steps.",  # evolves the seed again: round 1 failed
        seed(1, 2): "Use one word.",  # evolves round 1's result
        seed(2, 2): "empty",
    }
    operations: dict[str, str] = {}
    recipe = write_recipe(
        tmp_path,
        SEED_DATA
        + api_model("api")
        + """
stage evolved = expand(seeds) { teacher = api  method = evol_instruct  column = q  rounds = 2 }
""",
    )
    with FakeOpenAIServer(ScriptedModel(evolve_reply(actions, operations))) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    made = rows(document, "evolved")
    expected = [
        "What is 2 + 2? Answer in French.",
        "Name a fruit. Show your steps.",
        "What is 2 + 2? Answer in French. Use one word.",
    ]
    assert made[:3] == [{"q": s, "origin": "seed"} for s in SEEDS]
    assert [r["q"] for r in made[3:]] == expected
    assert [r["origin"] for r in made[3:]] == [operations[text] for text in expected]
    assert set(operations.values()) <= set(OPERATIONS)
    stats = node(document, "evolved")["stats"]
    assert stats["dropped"] == {"copy": 1, "empty": 1, "refusal": 1}
    assert server.requests == 6
    assert node(document, "evolved")["rows_out"] == 6


def test_evol_instruct_resumes_a_failed_round_without_repeating_finished_requests(
    tmp_path, monkeypatch
):
    """Round 2 fails for good on one request; the rerun sends only what had not finished and
    writes the same artifact as a run that never failed."""
    actions = {
        row_seed(7, "expand", c, f"evol-{r}"): f"Step {r}." for c in range(3) for r in (1, 2)
    }
    body = (
        SEED_DATA
        + api_model("api", concurrency=1, max_retries=0)
        + "\nstage evolved = expand(seeds) { teacher = api  method = evol_instruct  column = q  rounds = 2 }\n"
    )
    clean, broken = write_recipe(tmp_path / "clean", body), write_recipe(tmp_path / "broken", body)
    with FakeOpenAIServer(ScriptedModel(evolve_reply(actions, {}))) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        expected = rows(run_recipe(clean), "evolved")
        server.requests = 0
        server.fail("Translate 'cat' to French. Step 1.", Fault.server_error())
        failed = run_recipe(broken, expect=1)
        assert node(failed, "evolved")["status"] == "failed"
        assert "HTTP 500" in node(failed, "evolved")["error"]
        sent_before = server.requests  # round 1 (3) + round 2 up to the failure
        assert plan(broken)["evolved"]["status"] == "will run"
        resumed = run_recipe(broken)
    assert rows(resumed, "evolved") == expected
    assert node(resumed, "evolved")["stats"]["resumed_rows"] == sent_before - 1
    assert server.requests == 6 + 1  # the failed request is the only one sent twice
    data = [Path(node(d, "evolved")["output"]) / "data.arrow" for d in (resumed, run_recipe(clean))]
    assert data[0].read_bytes() == data[1].read_bytes()
