"""Float64 references of the token-level divergences, written from their definitions in
probability space (independent of ``kdlang.runtime.losses``, which works on log-probs)."""

from __future__ import annotations

import torch


def probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.double() / temperature, dim=-1)


def topk_probs(ids, logprobs, width: int, temperature: float) -> torch.Tensor:
    """Teacher distribution of a top-k cache: softmax(logprobs / T) on the ids, 0 elsewhere."""
    q_k = torch.softmax(logprobs.double() / temperature, dim=-1)
    dense = torch.zeros((*ids.shape[:-1], width), dtype=torch.float64, device=ids.device)
    return dense.scatter(-1, ids.long(), q_k)


def kl(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Σ w·log(w / v) with 0·log(0/v) = 0 (and finite gradients there)."""
    live = w > 0
    one = torch.ones_like(w)
    w1, v1 = torch.where(live, w, one), torch.where(live, v, one)
    return torch.where(live, w * (w1.log() - v1.log()), torch.zeros_like(w)).sum(-1)


def divergence(kind: str, p, q, beta: float = 0.5, alpha: float = 0.1) -> torch.Tensor:
    """Per-position divergence; p = student, q = teacher probabilities."""
    if kind == "forward_kl" or (kind == "jsd" and beta == 0):
        return kl(q, p)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        return kl(p, q)
    if kind == "jsd":
        m = beta * q + (1 - beta) * p
        return beta * kl(q, m) + (1 - beta) * kl(p, m)
    if kind == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if kind == "skew_kl":
        return kl(q, alpha * q + (1 - alpha) * p)
    if kind == "skew_rkl":
        return kl(p, alpha * p + (1 - alpha) * q)
    raise KeyError(kind)


def loss_and_grad(
    kind,
    student,
    teacher=None,
    *,
    topk=None,
    temperature=1.0,
    beta=0.5,
    alpha=0.1,
    labels=None,
    ignore_index=-100,
    reduction="token_mean",
    grad_output=None,
):
    """(loss, d loss / d student) in float64; ``grad_output`` weights a ``none`` loss."""
    z = student.detach().double().requires_grad_(True)
    p = probs(z, temperature)
    if topk is None:
        q = probs(teacher, temperature)
    else:
        q = topk_probs(*topk, student.shape[-1], temperature)
    per = divergence(kind, p, q, beta, alpha)
    counted = torch.ones_like(per, dtype=torch.bool)
    if labels is not None:
        counted = labels != ignore_index
        per = torch.where(counted, per, torch.zeros_like(per))
    if reduction == "none":
        loss = per
    elif reduction == "sum":
        loss = per.sum()
    else:
        loss = per.sum() / max(int(counted.sum()), 1)
    weights = torch.ones_like(loss) if grad_output is None else grad_output.double()
    (loss * weights).sum().backward()
    return loss.detach(), z.grad


def linear_loss_and_grads(
    kind,
    xs,
    ws,
    bs,
    xt,
    wt,
    *,
    temperature=1.0,
    labels=None,
    reduction="token_mean",
    grad_output=1.0,
    **params,
):
    """(loss, dX_S, dW_S, db_S) in float64 through fully materialized logits."""
    x, w, b = (t.detach().double().requires_grad_(True) for t in (xs, ws, bs))
    p = probs(x @ w.T + b, temperature)
    q = probs(xt.double() @ wt.double().T, temperature)
    per = divergence(kind, p, q, **params)
    counted = torch.ones_like(per, dtype=torch.bool) if labels is None else labels != -100
    per = torch.where(counted, per, torch.zeros_like(per))
    if reduction == "none":
        loss = per
    elif reduction == "sum":
        loss = per.sum()
    else:
        loss = per.sum() / max(int(counted.sum()), 1)
    if isinstance(grad_output, torch.Tensor):
        grad_output = grad_output.double()
    (loss * grad_output).sum().backward()
    return loss.detach(), x.grad, w.grad, b.grad
