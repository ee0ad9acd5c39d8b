"""``strategy = "ddp"`` through torch's ``DistributedDataParallel`` (two Gloo processes on CPU):
gradients are summed (not averaged) over processes, ``no_sync`` micro-batches accumulate
locally, a step's metrics are summed in one all-reduce, and the training loop under two processes — padded, or packed with a token budget
that gives the ranks different numbers of micro-batches, or with a hidden-state loss that leaves
parameters without gradients — follows the one-process padded trajectory."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROWS = [
    ("Q: What is 12 plus 7?\nA:", " 12 + 7 = 19. #### 19"),
    ("Hi", " 5"),
    ("Write a short poem about the sea.", " The wind and the light of the morning, and the sea."),
    ("Q: What is 30 minus 4?\nA:", " 30 - 4 = 26."),
    ("Say something.", " The quick brown fox jumps over the lazy dog."),
    ("Q: 2 + 2?\nA:", " 4"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)


# -- the wrapper alone ---------------------------------------------------------------------------


def _inputs(rank: int, micro: int) -> torch.Tensor:
    return torch.arange(12, dtype=torch.float32).reshape(3, 4) * (rank + 1) + micro


def _summing(rank: int, world: int, port: int, out: str) -> None:
    from kdlang.runtime.distributed import Dist, replicate

    _join(rank, world, port)
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    model = replicate(layer, torch.device("cpu"))
    with model.no_sync():
        model(_inputs(rank, 0)).square().sum().backward()
    local = layer.weight.grad.clone()
    model(_inputs(rank, 1)).square().sum().backward()
    values = {
        "tensor": torch.tensor(rank + 0.25),
        "number": 2.0 * rank,
        "float64": torch.tensor(1e-12, dtype=torch.float64),
    }
    totals = Dist(rank=rank, world=world).sum_values(values, torch.device("cpu"))
    torch.save(
        {"local": local, "summed": layer.weight.grad.clone(), "totals": totals},
        f"{out}/rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


def test_replicate_sums_gradients_and_no_sync_accumulates_locally(tmp_path):
    mp.spawn(_summing, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2).double()

    def grad(rank: int, micros: list[int]) -> torch.Tensor:
        layer.zero_grad()
        for micro in micros:
            layer(_inputs(rank, micro).double()).square().sum().backward()
        return layer.weight.grad.clone()

    expected = grad(0, [0, 1]) + grad(1, [0, 1])  # a sum over ranks and micro-batches
    for rank in range(2):
        found = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(found["local"].double(), grad(rank, [0]), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(found["summed"].double(), expected, rtol=1e-6, atol=1e-6)
        # the step's metrics: summed over processes in float64, back on the host as floats
        assert found["totals"] == {"tensor": 1.5, "number": 2.0, "float64": 2e-12}
        assert all(type(value) is float for value in found["totals"].values())


# -- the training loop ---------------------------------------------------------------------------


def _fit(config: dict, rank: int, world: int) -> dict:
    from kdlang.runtime.distributed import Dist
    from kdlang.runtime.train.examples import Example, encode
    from kdlang.runtime.train.loop import Job, fit
    from kdlang.runtime.train.models import head
    from kdlang.runtime.train.objective import Models, Objective
    from kdlang.runtime.train.packing import resolve_layout
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.runtime.train.support import loss, train_node

    tokenizer = AutoTokenizer.from_pretrained(config["tokenizer"])
    student = AutoModelForCausalLM.from_pretrained(config["student"]).float()
    teacher = AutoModelForCausalLM.from_pretrained(config["teacher"]).float().eval()
    examples = [
        Example(*encode(tokenizer, p, t, chat=True), row=i) for i, (p, t) in enumerate(ROWS)
    ]
    losses = [loss("sft", 0.5), loss("forward_kl", temperature=2.0)]
    if config.get("hidden"):  # layer 1 of 2: the last layer and the head get no gradient
        losses = [loss("hidden_mse", layers=[[1, 1]])]
    train = train_node(
        losses, max_steps=3, batch=6, lr=1e-3, checkpoint_every=100, **config["train"]
    )
    torch.manual_seed(0)  # the hidden-state projection starts the same in every process
    objective = Objective(
        train.losses,
        total_steps=3,
        teacher="online",
        backend="torch",
        layers=(2, 2),
        widths=(32, 64),
    )
    job = Job(
        train=train,
        objective=objective,
        models=Models(student, head(student), teacher, head(teacher)),
        tokenizer=tokenizer,
        examples=examples,
        folder=Path(config["folder"]),  # metrics.jsonl: rank 0 writes it
        total_steps=3,
        seed=7,
        device=torch.device("cpu"),
        online=True,
        dist=Dist(rank=rank, world=world) if world > 1 else Dist(),
        layout=resolve_layout(train, student, teacher),
    )
    job.folder.mkdir(parents=True, exist_ok=True)
    records = fit(job)
    weights = {name: p.detach().clone() for name, p in student.named_parameters()}
    weights.update(
        {f"projection.{n}": p.detach().clone() for n, p in objective.projections.named_parameters()}
    )
    return {"records": records, "weights": weights, "packed": job.layout.packed}


def _training(rank: int, world: int, port: int, config: dict) -> None:
    _join(rank, world, port)
    torch.save(_fit(config, rank, world), Path(config["folder"]) / f"out{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize(
    "settings",
    [
        {"grad_accum": 2, "packing": False},
        {"packing": True, "tokens_per_micro_batch": 70},
        {"packing": True, "tokens_per_micro_batch": 70, "hidden": True},
    ],
    ids=["padded", "packed", "packed_hidden_states"],
)
def test_two_processes_follow_the_one_process_padded_trajectory(tmp_path, tiny_pair, settings):
    settings = dict(settings)
    hidden = settings.pop("hidden", False)
    paths = {"tokenizer": str(tiny_pair.tokenizer), "student": str(tiny_pair.student)}
    paths.update(teacher=str(tiny_pair.teacher), hidden=hidden)
    single = _fit({**paths, "folder": str(tmp_path / "one"), "train": {"packing": False}}, 0, 1)
    config = {**paths, "folder": str(tmp_path / "two"), "train": settings}
    mp.spawn(_training, args=(2, _free_port(), config), nprocs=2)
    ranks = [torch.load(tmp_path / "two" / f"out{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert ranks[0]["packed"] is settings["packing"]
    for found, expected in zip(ranks[0]["records"], single["records"], strict=True):
        assert found["tokens"] == expected["tokens"]
        keys = ("loss", "hidden_mse") if hidden else ("loss", "sft", "forward_kl")
        for key in (*keys, "grad_norm"):
            assert found[key] == pytest.approx(expected[key], rel=1e-4), (found["step"], key)
    for name, weight in single["weights"].items():
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name]), name
        torch.testing.assert_close(ranks[0]["weights"][name], weight, rtol=1e-4, atol=1e-5)
