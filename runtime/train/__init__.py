"""Training a student: the ``train`` stage's machinery.

- :mod:`.loop` — the loop itself, top to bottom (read it first);
- :mod:`.job` — from a ``train`` node and its context to everything the loop needs;
- :mod:`.objective` — the composed, scheduled loss of a step (the formulas live in
  :mod:`kdlang.runtime.losses`);
- :mod:`.examples` — token ids, padded batches, data order;
- :mod:`.onpolicy` — student samples for on-policy (GKD) steps;
- :mod:`.models` — loading, LoRA, vocabulary checks, optimizer, precision, loss path;
- :mod:`.checkpoint`, :mod:`.metrics`, :mod:`.fsdp` — resume, records, sharded students;
- :mod:`.card` — the model card an ``export`` writes.
"""
