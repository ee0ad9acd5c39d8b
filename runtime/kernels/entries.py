"""The kernels' entry of every divergence: its per-vocabulary-entry formulas, shared by all
the Triton kernels, and :data:`MODES`, the registry of the kernel modes.

For one position, with student log-probabilities ``a = log p_S`` and teacher
log-probabilities ``b = log p_T`` over the vocabulary, every divergence D is a sum of
entry terms ``ell_v`` and its gradient with respect to the softened student logits
``s = z_S / T`` has the form

    ∂D/∂s_v = pg_v − p_v · C,      C = Σ_u pg_u,      pg_v = p_v · ∂D/∂p_v,

because ∂p_u/∂s_v = p_u (δ_uv − p_v). ``divergence_terms`` returns ``(ell, pg)`` for one
block of entries; a constant added to ∂D/∂p_v cancels in ``pg − p·C``, so ``pg`` drops
such constants. The gradient with respect to the raw logits is ``(pg − p·C) / T``.

| mode        | ell_v                            | pg_v                      | C        |
|-------------|----------------------------------|---------------------------|----------|
| forward_kl  | q (b − a)                        | −q                        | −1       |
| reverse_kl  | p (a − b)                        | p (a − b)                 | D        |
| jsd         | β q (b − lm) + (1−β) p (a − lm)  | (1−β) p (a − lm)          | Σ pg     |
| tvd         | ½ |p − q|                        | ½ p sign(p − q)           | Σ pg     |
| skew_kl     | q (b − lr)                       | −(1−α) p q / r            | Σ pg     |
| skew_rkl    | p (a − lr)                       | p (a − lr) − α p² / r     | Σ pg     |
| teacher_ce  | −q a                             | −q                        | Σ pg     |

with m = β q + (1−β) p, lm = log m; r = α q + (1−α) p for skew_kl and r = α p + (1−α) q
for skew_rkl, lr = log r. The mixtures are formed in probability space (one log per
entry instead of a log-add-exp): an entry whose p and q both underflow contributes
nothing either way. Terms weighted by a zero probability are exactly 0, so ``−inf``
log-probabilities are safe. ``weight`` is the divergence's option (β of jsd, α of the
skews: its keyword in ``losses/reference.py``); the other modes ignore it.

``outside_terms`` gives the same two quantities for an entry where the teacher has no
mass (q = 0), as multiples of p: ``ell = c_ell·p`` and ``pg = c_pg·p``. The sparse
(top-k) teacher kernel uses them for the entries outside the teacher's ids.

A new divergence is a new mode here (a number in :data:`MODES` under the IR loss's
``kernel_mode``, a branch of ``divergence_terms`` and of ``outside_terms``) beside its
reference formula in ``losses/reference.py``; the dispatch reads both registries.
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
TEACHER_CE = 6

MODES = {
    "forward_kl": FORWARD_KL,
    "reverse_kl": REVERSE_KL,
    "jsd": JSD,
    "tvd": TVD,
    "skew_kl": SKEW_KL,
    "skew_rkl": SKEW_RKL,
    "teacher_ce": TEACHER_CE,
}
"""The kernel mode of every divergence, by the IR loss's ``kernel_mode``."""


def outside_terms(mode: int, weight: float) -> tuple[float, float]:
    """(c_ell, c_pg) of an entry with q = 0: ell = c_ell·p, pg = c_pg·p.

    forward_kl, skew_kl and teacher_ce put no weight there; tvd counts ½|p|; jsd sees
    m = (1−β) p, so a − lm = −log(1−β); skew_rkl sees r = α p, so a − lr = −log α and
    α p²/r = p. reverse_kl (and the modes reducing to it) are infinite there.
    """
    if mode in (FORWARD_KL, SKEW_KL, TEACHER_CE):
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
def divergence_terms(a, b, p, q, MODE: tl.constexpr, weight):
    """(ell, pg) for blocks of log-probs ``a``, ``b`` and probabilities ``p``, ``q`` (fp32)."""
    if MODE == 0:  # forward_kl
        ell = tl.where(q > 0, q * (b - a), 0.0)
        pg = -q
    elif MODE == 1:  # reverse_kl
        ell = tl.where(p > 0, p * (a - b), 0.0)
        pg = ell
    elif MODE == 2:  # jsd
        lm = tl.log(weight * q + (1.0 - weight) * p)
        s_part = tl.where(p > 0, p * (a - lm), 0.0)
        ell = weight * tl.where(q > 0, q * (b - lm), 0.0) + (1.0 - weight) * s_part
        pg = (1.0 - weight) * s_part
    elif MODE == 3:  # tvd
        ell = 0.5 * tl.abs(p - q)
        pg = tl.where(p > q, 0.5 * p, tl.where(p < q, -0.5 * p, 0.0))
    elif MODE == 4:  # skew_kl
        r = weight * q + (1.0 - weight) * p
        live = q > 0
        ell = tl.where(live, q * (b - tl.log(r)), 0.0)
        pg = tl.where(live, -(1.0 - weight) * (p * q / r), 0.0)
    elif MODE == 5:  # skew_rkl
        r = weight * p + (1.0 - weight) * q
        live = p > 0
        ell = tl.where(live, p * (a - tl.log(r)), 0.0)
        pg = ell - tl.where(live, weight * (p * p / r), 0.0)
    else:  # teacher_ce
        ell = tl.where(q > 0, -q * a, 0.0)
        pg = -q
    return ell, pg


@triton.jit
def softmax_block_update(m, z, x, inv_t):
    """Fold a block ``x`` into a running softmax of ``x·inv_t``: max ``m`` (raw logit units)
    and Σ exp((x − m)·inv_t) ``z``. One exp per entry; a block of only −inf adds 0."""
    m_new = tl.maximum(m, tl.max(x, axis=0))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    z = z * tl.exp((m - m_safe) * inv_t) + tl.sum(tl.exp((x - m_safe) * inv_t), axis=0)
    return m_new, z
