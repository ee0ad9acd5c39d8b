"""Per-vocabulary-entry terms of every divergence, shared by all the Triton kernels.

For one position, with student log-probabilities ``a = log p_S`` and teacher
log-probabilities ``b = log p_T`` over the vocabulary, every divergence D is a sum of
entry terms ``ell_v`` and its gradient with respect to the softened student logits
``s = z_S / T`` has the form

    ∂D/∂s_v = pg_v − p_v · C,      C = Σ_u pg_u,      pg_v = p_v · ∂D/∂p_v,

because ∂p_u/∂s_v = p_u (δ_uv − p_v). ``divergence_terms`` returns ``(ell, pg)`` for one
block of entries; a constant added to ∂D/∂p_v cancels in ``pg − p·C``, so ``pg`` drops
such constants. The gradient with respect to the raw logits is ``(pg − p·C) / T``.

| mode        | ell_v                        | pg_v                          | C            |
|-------------|------------------------------|-------------------------------|--------------|
| forward_kl  | q (b − a)                    | −q                            | −1           |
| reverse_kl  | p (a − b)                    | p (a − b)                     | D            |
| jsd         | β q (b − lm) + (1−β) p (a − lm) | (1−β) p (a − lm)           | Σ pg         |
| tvd         | ½ |p − q|                    | ½ p sign(p − q)               | Σ pg         |
| skew_kl     | q (b − lr)                   | −(1−α) p q / r                | Σ pg         |
| skew_rkl    | p (a − lr)                   | p (a − lr) − α p² / r         | Σ pg         |

with lm = log(β q + (1−β) p) and r = α q + (1−α) p for skew_kl, r = α p + (1−α) q for
skew_rkl (lr = log r). Terms weighted by a zero probability are exactly 0, so ``−inf``
log-probabilities are safe. The mixtures are built from ``log_w1 = log(β or α)`` and
``log_w2 = log(1 − β or 1 − α)``, passed in precomputed.

``outside_terms`` gives the same two quantities for an entry where the teacher has no
mass (q = 0), as multiples of p: ``ell = c_ell·p`` and ``pg = c_pg·p``. The sparse
(top-k) teacher kernel uses them for the entries outside the teacher's ids.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

FORWARD_KL = 0
REVERSE_KL = 1
JSD = 2
TVD = 3
SKEW_KL = 4
SKEW_RKL = 5

MODES = {
    "forward_kl": FORWARD_KL,
    "reverse_kl": REVERSE_KL,
    "jsd": JSD,
    "tvd": TVD,
    "skew_kl": SKEW_KL,
    "skew_rkl": SKEW_RKL,
}


def mode_needs_sum(mode: int) -> bool:
    """Whether the gradient needs C = Σ pg, a second reduction over the row."""
    return mode != FORWARD_KL


def mixture_logs(weight: float) -> tuple[float, float]:
    """(log w, log(1 − w)) with log 0 = −inf."""
    log_w1 = math.log(weight) if weight > 0 else -math.inf
    log_w2 = math.log1p(-weight) if weight < 1 else -math.inf
    return log_w1, log_w2


def outside_terms(mode: int, weight: float) -> tuple[float, float]:
    """(c_ell, c_pg) of an entry with q = 0: ell = c_ell·p, pg = c_pg·p.

    forward_kl and skew_kl put no weight there; tvd counts ½|p|; jsd sees
    m = (1−β) p, so a − lm = −log(1−β); skew_rkl sees r = α p, so a − lr = −log α and
    α p²/r = p. reverse_kl (and the modes reducing to it) are infinite there.
    """
    if mode in (FORWARD_KL, SKEW_KL):
        return 0.0, 0.0
    if mode == TVD:
        return 0.5, 0.5
    if mode == JSD:
        c = -(1.0 - weight) * math.log1p(-weight)
        return c, c
    if mode == SKEW_RKL:
        return -math.log(weight), -math.log(weight) - 1.0
    raise ValueError("this divergence is infinite where the teacher has no mass")


@triton.jit
def log_add_exp(x, y):
    """log(e^x + e^y), exact when one or both are −inf."""
    hi = tl.maximum(x, y)
    hi_safe = tl.where(hi == float("-inf"), 0.0, hi)
    return hi_safe + tl.log(tl.exp(x - hi_safe) + tl.exp(y - hi_safe))


@triton.jit
def divergence_terms(a, b, MODE: tl.constexpr, weight, log_w1, log_w2):
    """(ell, pg) for blocks of student log-probs ``a`` and teacher log-probs ``b`` (fp32)."""
    p = tl.exp(a)
    q = tl.exp(b)
    if MODE == 0:  # forward_kl
        ell = tl.where(q > 0, q * (b - a), 0.0)
        pg = -q
    elif MODE == 1:  # reverse_kl
        ell = tl.where(p > 0, p * (a - b), 0.0)
        pg = ell
    elif MODE == 2:  # jsd
        lm = log_add_exp(b + log_w1, a + log_w2)
        t_part = tl.where(q > 0, q * (b - lm), 0.0)
        s_part = tl.where(p > 0, p * (a - lm), 0.0)
        ell = weight * t_part + (1.0 - weight) * s_part
        pg = (1.0 - weight) * s_part
    elif MODE == 3:  # tvd
        ell = 0.5 * tl.abs(p - q)
        sign = tl.where(p > q, 1.0, tl.where(p < q, -1.0, 0.0))
        pg = 0.5 * p * sign
    elif MODE == 4:  # skew_kl
        lr = log_add_exp(b + log_w1, a + log_w2)
        live = q > 0
        ell = tl.where(live, q * (b - lr), 0.0)
        pg = tl.where(live, -(1.0 - weight) * tl.exp(a + b - lr), 0.0)
    else:  # skew_rkl
        lr = log_add_exp(a + log_w1, b + log_w2)
        live = p > 0
        ell = tl.where(live, p * (a - lr), 0.0)
        pg = ell - tl.where(live, weight * tl.exp(a + a - lr), 0.0)
    return ell, pg


@triton.jit
def online_softmax_update(m, z, x, inv_t):
    """One step of a lane-wise online softmax of ``x·inv_t``: running max ``m`` (raw logit
    units) and running Σ exp((x − m)·inv_t) ``z``; lanes that saw only −inf keep z = 0."""
    m_new = tl.maximum(m, x)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    z = z * tl.exp((m - m_safe) * inv_t) + tl.exp((x - m_safe) * inv_t)
    return m_new, z


@triton.jit
def online_softmax_finish(m, z, inv_t):
    """Reduce lane-wise (m, z) to the row's (max, log Σ exp((x − max)·inv_t))."""
    top = tl.max(m, axis=0)
    top_safe = tl.where(top == float("-inf"), 0.0, top)
    total = tl.sum(z * tl.exp((m - top_safe) * inv_t), axis=0)
    return top_safe, tl.log(total)
