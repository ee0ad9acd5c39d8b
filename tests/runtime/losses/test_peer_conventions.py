"""The peers' loss conventions reproduced with kdlang's losses, against float64 references
written here in probability space (none of them calls ``kdlang.runtime.losses``):

- ``topk_mass`` against a top-k teacher whose k ids hold mass M < 1: ``renormalize``,
  ``keep`` (the raw top-k probabilities, axolotl's ``kd_normalize_topk = false``) and ``uniform`` (DistillKit's symmetric uniform handling of the missing mass), on
  the torch path, the Triton kernel (its interpreter on CPU) and the fused-linear chunked path;
- the reductions ``token_mean | sum | batchmean | sequence_mean | topk_entries``, on a batch
  with padding and sequences of different lengths;
- pinned peer values: torchtune's KD loss fixture, TRL's generalized JSD, DistiLLM's skewed
  KLs and JS distance, axolotl's top-k forward KL.
"""

from __future__ import annotations

import math

import pytest
import torch
from kdlang.runtime.losses import distill_loss, fused_linear_distill_loss
from kdlang.runtime.losses.divergence_sums import divergence_sum
from kdlang.runtime.losses.head import chunked_head_sum
from torch import nn

from tests.runtime.losses.peer_references import (
    KINDS,
    LENGTHS,
    B,
    K,
    L,
    V,
    cached_teacher,
    check_torchtune_fixture,
    close,
    dense_ref,
    padded_labels,
    reduce_ref,
    ref_topk_loss_and_grad,
    ref_topk_per_position,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter

KIND_IDS = [k + "".join(f"-{v}" for v in p.values()) for k, p in KINDS]


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(B, L, V, generator=gen, dtype=torch.float64)
    ids, logprobs = cached_teacher(B, L, V, K)
    return student, ids, logprobs, padded_labels(B, L, LENGTHS)


def test_the_fixture_teacher_misses_mass():
    _, logprobs = cached_teacher(B, L, V, K)
    mass = logprobs.double().exp().sum(-1)
    assert float(mass.max()) < 0.97 and float(mass.min()) > 0.2


# -- topk_mass --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, params", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("mass", ["renormalize", "keep", "uniform"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_mass_on_the_torch_path(batch, kind, params, mass, temperature):
    student, ids, logprobs, labels = batch
    ref, ref_grad = ref_topk_loss_and_grad(
        kind, params, student, ids, logprobs, labels, temperature=temperature, mass=mass
    )
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        z = student.detach().to(dtype).clone().requires_grad_(True)
        loss = distill_loss(
            z,
            kind=kind,
            teacher_topk=(ids, logprobs),
            temperature=temperature,
            labels=labels,
            topk_mass=mass,
            backend="torch",
            **params,
        )
        loss.backward()
        close(loss, ref, rtol=rtol)
        close(z.grad, ref_grad, rtol=rtol, floor=1e-9 if dtype == torch.float64 else 1e-7)


@pytest.mark.parametrize("kind, params", KINDS[::2] + KINDS[3:4], ids=KIND_IDS[::2] + KIND_IDS[3:4])
@pytest.mark.parametrize("mass", ["keep", "uniform"])
def test_topk_mass_on_the_fused_linear_path(kind, params, mass):
    """The fused-linear path runs a top-k teacher's divergence on head(hidden) chunk by chunk,
    gathered to the counted rows (what the objective does): the same values and gradients as
    the reference on materialized logits."""
    torch.manual_seed(3)
    hidden = torch.randn(B, L, 8, dtype=torch.float64)
    lm_head = nn.Linear(8, V, bias=False).double()
    ids, logprobs = cached_teacher(B, L, V, K, seed=5)
    labels = padded_labels(B, L, LENGTHS)
    h = hidden.clone().requires_grad_(True)

    def rows(z, lab, i, lp):
        return divergence_sum(
            z,
            lab,
            kind=kind,
            temperature=2.0,
            teacher_topk=(i, lp),
            topk_mass=mass,
            backend="torch",
            **params,
        )

    total = chunked_head_sum(h, lm_head, labels, rows, ids, logprobs)
    total.backward()
    h_ref = hidden.clone().requires_grad_(True)
    w_ref = lm_head.weight.detach().clone().requires_grad_(True)
    per = ref_topk_per_position(kind, params, h_ref @ w_ref.T, ids, logprobs, 2.0, mass)
    ref = reduce_ref(per, labels, "sum")
    ref.backward()
    close(total, ref.detach(), rtol=1e-10)
    close(h.grad, h_ref.grad, rtol=1e-10, floor=1e-12)
    close(lm_head.weight.grad, w_ref.grad, rtol=1e-10, floor=1e-12)


def test_keep_at_temperature_one_is_the_raw_top_k_forward_kl(batch):
    """The un-normalized top-k forward KL (axolotl's top-k loss with ``kd_normalize_topk =
    false``, and the form described for EasyDistill's): the cached probabilities e^ℓ as
    they are, Σ_k e^ℓ (ℓ − log p_S) over the k ids."""
    student, ids, logprobs, labels = batch
    lp = logprobs.double()
    a = torch.log_softmax(student, -1).gather(-1, ids)
    per = (lp.exp() * (lp - a)).sum(-1)
    expected = per[labels != -100].mean()
    got = distill_loss(
        student, teacher_topk=(ids, logprobs), labels=labels, topk_mass="keep", backend="torch"
    )
    assert float(got) == pytest.approx(float(expected), rel=1e-12)
    renormalized = distill_loss(
        student, teacher_topk=(ids, logprobs), labels=labels, backend="torch"
    )
    assert abs(float(renormalized) - float(expected)) > 1e-2  # the two conventions differ here


def test_uniform_at_temperature_one_is_distillkit_symmetric_uniform(batch):
    """DistillKit's sparse KL with ``missing_probability_handling = symmetric_uniform`` at
    T = 1: Σ_k e^ℓ (ℓ − log p_S) + (1 − M) log((1 − M) / (1 − Σ_k p_S)), M = Σ_k e^ℓ."""
    student, ids, logprobs, labels = batch
    lp = logprobs.double()
    a = torch.log_softmax(student, -1).gather(-1, ids)
    missing_t = 1 - lp.exp().sum(-1)
    missing_s = 1 - a.exp().sum(-1)
    per = (lp.exp() * (lp - a)).sum(-1) + missing_t * (missing_t / missing_s).log()
    expected = per[labels != -100].sum()
    got = distill_loss(
        student,
        teacher_topk=(ids, logprobs),
        labels=labels,
        topk_mass="uniform",
        reduction="sum",
        backend="torch",
    )
    assert float(got) == pytest.approx(float(expected), rel=1e-12)


def test_topk_mass_needs_a_top_k_teacher_and_keeps_reverse_kl_refused(batch):
    student, ids, logprobs, _ = batch
    with pytest.raises(ValueError, match="topk_mass acts on a top-k teacher only"):
        distill_loss(student, student, topk_mass="keep", backend="torch")
    with pytest.raises(ValueError, match="topk_mass must be one of"):
        distill_loss(student, teacher_topk=(ids, logprobs), topk_mass="spread", backend="torch")
    with pytest.raises(ValueError, match="infinite against a top-k teacher"):
        distill_loss(
            student,
            teacher_topk=(ids, logprobs),
            kind="reverse_kl",
            topk_mass="uniform",
            backend="torch",
        )


# -- reductions -------------------------------------------------------------------------------

DENSE_REDUCTIONS = ["token_mean", "sum", "batchmean", "sequence_mean"]


def test_the_reductions_by_hand():
    """The denominators on the fixture, counted by hand: 11 counted positions (5 + 2 + 4) in
    3 sequences; per-position values 1 at every counted position give 11, 11/11, 11/3 and
    (5/5 + 2/2 + 4/4)/3; with values equal to the position index, sequence_mean is
    ((0+1+2+3+4)/5 + (0+1)/2 + (0+1+2+3)/4)/3 = (2 + 0.5 + 1.5)/3 = 4/3."""
    from kdlang.runtime.losses.distill import finish_reduction, reduce_loss

    labels = padded_labels(B, L, LENGTHS)
    per = torch.arange(L, dtype=torch.float64).expand(B, L)
    per = torch.where(labels != -100, per, torch.zeros_like(per))
    token_sum = reduce_loss(per, labels, -100, "sum")
    assert float(token_sum) == 10 + 1 + 6
    assert float(finish_reduction(token_sum, "batchmean", labels, -100, (B, L), 1)) == 17 / 3
    assert float(finish_reduction(per, "sequence_mean", labels, -100, (B, L), 1)) == pytest.approx(
        4 / 3, rel=1e-15
    )
    mean = reduce_loss(per, labels, -100, "token_mean")
    assert float(finish_reduction(mean, "topk_entries", labels, -100, (B, L), 4)) == 17 / 11 / 4
    # a sequence without counted positions is not a sequence of the mean
    labels[1] = -100
    per = torch.where(labels != -100, per, torch.zeros_like(per))
    value = finish_reduction(per, "sequence_mean", labels, -100, (B, L), 1)
    assert float(value) == pytest.approx((2 + 1.5) / 2, rel=1e-15)


@pytest.mark.parametrize("kind, params", [("forward_kl", {}), ("jsd", {"beta": 0.4})])
@pytest.mark.parametrize("reduction", DENSE_REDUCTIONS)
def test_reductions_with_padding_on_every_path(kind, params, reduction):
    gen = torch.Generator().manual_seed(7)
    student = torch.randn(B, L, V, generator=gen, dtype=torch.float64)
    teacher = torch.randn(B, L, V, generator=gen, dtype=torch.float64)
    labels = padded_labels(B, L, LENGTHS)
    ref, ref_grad = dense_ref(kind, params, student, teacher, labels, reduction)

    z = student.clone().requires_grad_(True)
    loss = distill_loss(
        z,
        teacher,
        kind,
        temperature=2.0,
        labels=labels,
        reduction=reduction,
        backend="torch",
        **params,
    )
    loss.backward()
    close(loss, ref, rtol=1e-12)
    close(z.grad, ref_grad, rtol=1e-12, floor=1e-14)

    # the fused-linear loss, from hidden states and heads
    torch.manual_seed(11)
    hs, ht = torch.randn(B, L, 6, dtype=torch.float64), torch.randn(B, L, 5, dtype=torch.float64)
    ws, wt = torch.randn(V, 6, dtype=torch.float64), torch.randn(V, 5, dtype=torch.float64)
    ref, ref_grad = dense_ref(kind, params, hs @ ws.T, ht @ wt.T, labels, reduction)
    h = hs.clone().requires_grad_(True)
    loss = fused_linear_distill_loss(
        h,
        ws,
        ht,
        wt,
        kind,
        temperature=2.0,
        labels=labels,
        reduction=reduction,
        chunk_size=4,
        backend="torch",
        **params,
    )
    loss.backward()
    close(loss, ref, rtol=1e-12)
    # d loss / d hidden = (d loss / d logits) W_S
    close(h.grad, ref_grad @ ws, rtol=1e-12, floor=1e-14)


@pytest.mark.parametrize("mass", ["renormalize", "keep"])
def test_topk_entries_divides_by_the_kept_entries(batch, mass):
    """axolotl's top-k loss divides by the kept (position, k) entries: 11 positions × 6."""
    student, ids, logprobs, labels = batch
    ref, ref_grad = ref_topk_loss_and_grad(
        "forward_kl",
        {},
        student,
        ids,
        logprobs,
        labels,
        temperature=1.0,
        mass=mass,
        reduction="topk_entries",
    )
    z = student.clone().requires_grad_(True)
    loss = distill_loss(
        z,
        teacher_topk=(ids, logprobs),
        labels=labels,
        topk_mass=mass,
        reduction="topk_entries",
        backend="torch",
    )
    loss.backward()
    close(loss, ref, rtol=1e-12)
    close(z.grad, ref_grad, rtol=1e-12, floor=1e-14)
    token_mean = distill_loss(
        student, teacher_topk=(ids, logprobs), labels=labels, topk_mass=mass, backend="torch"
    )
    assert float(loss.detach()) == pytest.approx(float(token_mean) / K, rel=1e-12)
    with pytest.raises(ValueError, match="topk_entries"):
        distill_loss(student, student, reduction="topk_entries", backend="torch")


def test_the_default_reduction_is_token_mean(batch):
    student, ids, logprobs, labels = batch
    default = distill_loss(student, teacher_topk=(ids, logprobs), labels=labels, backend="torch")
    total = distill_loss(
        student, teacher_topk=(ids, logprobs), labels=labels, reduction="sum", backend="torch"
    )
    assert float(default) == pytest.approx(float(total) / sum(LENGTHS), rel=1e-12)


# -- pinned peer values -----------------------------------------------------------------------


def test_torchtune_fixture():
    check_torchtune_fixture("torch")


def trl_generalized_jsd(
    student, teacher, labels=None, beta=0.5, temperature=1.0, reduction="batchmean"
):
    """TRL GKDTrainer.generalized_jsd_loss as its docstring and code define it (current
    releases): elementwise KL terms over [B, L, V]; β = 0 forward KL, β = 1 reverse KL,
    otherwise β·KL(p_T‖m) + (1−β)·KL(p_S‖m), m = β p_T + (1−β) p_S; masked by labels; then
    batchmean = sum / counted tokens with labels, sum / B without; sum; mean = the mean over
    the remaining elements (vocabulary entries included). Written here in float64."""
    p = torch.softmax(student.double() / temperature, -1)
    q = torch.softmax(teacher.double() / temperature, -1)
    if beta == 0:
        terms = q * (q.log() - p.log())
    elif beta == 1:
        terms = p * (p.log() - q.log())
    else:
        m = beta * q + (1 - beta) * p
        terms = beta * q * (q.log() - m.log()) + (1 - beta) * p * (p.log() - m.log())
    if labels is not None:
        terms = terms[labels != -100]
    if reduction == "batchmean":
        return terms.sum() / terms.shape[0]  # counted tokens with labels, B without
    if reduction == "sum":
        return terms.sum()
    if reduction == "mean":
        return terms.mean()
    raise KeyError(reduction)


def test_trl_edge_case_values():
    """TRL's test fixture: student (0.1, 0.9), teacher (0.9, 0.1), one position, batchmean.
    By hand: KL either way = 0.8·ln 9; β = 0.5: m = (0.5, 0.5) and both KLs are
    0.9 ln 1.8 + 0.1 ln 0.2."""
    student = torch.log(torch.tensor([[[0.1, 0.9]]], dtype=torch.float64))
    teacher = torch.log(torch.tensor([[[0.9, 0.1]]], dtype=torch.float64))
    both_ways = 0.8 * math.log(9)
    half = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    for beta, expected in ((0.0, both_ways), (1.0, both_ways), (0.5, half)):
        got = distill_loss(
            student, teacher, "jsd", beta=beta, reduction="batchmean", backend="torch"
        )
        assert float(got) == pytest.approx(expected, rel=1e-12)
    same = torch.zeros(1, 1, 5, dtype=torch.float64)
    assert float(distill_loss(same, same, "jsd", backend="torch")) == pytest.approx(0, abs=1e-15)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_trl_generalized_jsd_under_each_reduction(beta, temperature):
    gen = torch.Generator().manual_seed(13)
    student = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[0, 1, -100], [2, -100, -100]])

    def ours(reduction, with_labels):
        return float(
            distill_loss(
                student,
                teacher,
                "jsd",
                beta=beta,
                temperature=temperature,
                labels=labels if with_labels else None,
                reduction=reduction,
                backend="torch",
            )
        )

    def theirs(reduction, with_labels):
        return float(
            trl_generalized_jsd(
                student, teacher, labels if with_labels else None, beta, temperature, reduction
            )
        )

    # TRL's batchmean: the token mean with labels, the batch mean without
    assert ours("token_mean", True) == pytest.approx(theirs("batchmean", True), rel=1e-12)
    assert ours("batchmean", False) == pytest.approx(theirs("batchmean", False), rel=1e-12)
    assert ours("sum", True) == pytest.approx(theirs("sum", True), rel=1e-12)
    assert ours("sum", False) == pytest.approx(theirs("sum", False), rel=1e-12)
    # TRL's mean also divides by the vocabulary: kdlang's token mean with weight 1/V
    assert ours("token_mean", True) / 5 == pytest.approx(theirs("mean", True), rel=1e-12)


# DistiLLM's losses (distillm/losses.py): skewed_forward_kl(λ) = −Σ p_T log(λ p_T + (1−λ) p_S)
# (the cross-entropy form: KL + H(p_T)), skewed_reverse_kl(λ) = KL(p_S ‖ (1−λ) p_T + λ p_S),
# js_distance(λ) = λ·KL(p_S ‖ m) + (1−λ)·KL(p_T ‖ m) with m = (1−λ) p_T + λ p_S; each the
# mean over positions whose label is not −100.


def distillm_reference(name, student, teacher, labels, lam):
    p, q = torch.softmax(student.double(), -1), torch.softmax(teacher.double(), -1)
    if name == "sfkl":
        per = -(q * (lam * q + (1 - lam) * p).log()).sum(-1)
    elif name == "srkl":
        m = (1 - lam) * q + lam * p
        per = (p * (p.log() - m.log())).sum(-1)
    else:
        m = (1 - lam) * q + lam * p
        per = lam * (p * (p.log() - m.log())).sum(-1) + (1 - lam) * (q * (q.log() - m.log())).sum(
            -1
        )
    return per[labels != -100].mean()


@pytest.mark.parametrize("lam", [0.1, 0.5, 0.9])
def test_distillm_sfkl_srkl_and_js_distance(lam):
    gen = torch.Generator().manual_seed(17)
    student = torch.randn(2, 4, 9, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 4, 9, generator=gen, dtype=torch.float64) * 1.5
    labels = padded_labels(2, 4, [4, 3])

    def ours(kind, **options):
        z = student.clone().requires_grad_(True)
        value = distill_loss(z, teacher, kind, labels=labels, backend="torch", **options)
        value.backward()
        return float(value.detach()), z.grad

    def grad_of(name):
        z = student.clone().requires_grad_(True)
        distillm_reference(name, z, teacher, labels, lam).backward()
        return z.grad

    # srkl(λ) is skew_rkl(alpha = λ)
    value, grad = ours("skew_rkl", alpha=lam)
    assert value == pytest.approx(
        float(distillm_reference("srkl", student, teacher, labels, lam)), rel=1e-12
    )
    close(grad, grad_of("srkl"), rtol=1e-12, floor=1e-14)
    # js_distance(λ) is jsd(beta = 1 − λ)
    value, grad = ours("jsd", beta=1 - lam)
    assert value == pytest.approx(
        float(distillm_reference("js", student, teacher, labels, lam)), rel=1e-12
    )
    close(grad, grad_of("js"), rtol=1e-12, floor=1e-14)
    # sfkl(λ) is skew_kl(alpha = λ) in gradient; its value adds the teacher's entropy, which
    # is teacher_ce − forward_kl
    value, grad = ours("skew_kl", alpha=lam)
    entropy = ours("teacher_ce")[0] - ours("forward_kl")[0]
    expected = float(distillm_reference("sfkl", student, teacher, labels, lam))
    assert value + entropy == pytest.approx(expected, rel=1e-12)
    close(grad, grad_of("sfkl"), rtol=1e-12, floor=1e-14)


def test_axolotl_top_k_forward_kl():
    """axolotl's top-k KD loss (integrations/kd/topk_logprob/forward_kl.py) with
    ``kd_normalize_topk = false`` and T = 1: Σ over the kept (position, id) entries of
    e^ℓ (ℓ − log p_S[id]), divided by the number of kept entries — `loss forward_kl(topk_mass =
    keep, reduction = topk_entries)`."""
    ids, logprobs = cached_teacher(2, 3, 23, 4, seed=9)
    student = torch.randn(2, 3, 23, dtype=torch.float64)
    labels = padded_labels(2, 3, [3, 1])
    counted = labels != -100
    a = torch.log_softmax(student, -1).gather(-1, ids)
    lp = logprobs.double()
    entries = (lp.exp() * (lp - a))[counted]  # [kept positions, k]
    expected = entries.sum() / entries.numel()
    got = distill_loss(
        student,
        teacher_topk=(ids, logprobs),
        labels=labels,
        topk_mass="keep",
        reduction="topk_entries",
        backend="torch",
    )
    assert float(got) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("kind, params", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_a_cache_holding_all_the_mass_is_the_same_under_every_handling(kind, params, temperature):
    """When the k ids hold all of the cached mass there is no rest: keep and uniform are
    renormalize (for teacher_ce too, the teacher's rest being 0)."""
    gen = torch.Generator().manual_seed(23)
    student = torch.randn(2, 3, 19, generator=gen, dtype=torch.float64)
    ids = torch.stack([torch.randperm(19, generator=gen)[:4] for _ in range(6)]).view(2, 3, 4)
    logprobs = torch.log_softmax(torch.randn(2, 3, 4, generator=gen, dtype=torch.float64), -1)
    values = [
        float(
            distill_loss(
                student,
                kind=kind,
                teacher_topk=(ids, logprobs),
                topk_mass=mass,
                temperature=temperature,
                backend="torch",
                **params,
            )
        )
        for mass in ("renormalize", "keep", "uniform")
    ]
    assert values[1] == pytest.approx(values[0], rel=1e-12)
    assert values[2] == pytest.approx(values[0], rel=1e-12)
