"""Routing analysis: the analyze stage and the metric functions it uses.

Pure metric modules over per-token routing arrays (testable without a model):
- information: entropy and mutual information of count tables (one definition).
- specialization: P(expert | domain), purity, I(E;D)/H(D) with a group-level
  permutation baseline and bootstrap interval.
- token_identity: held-out token-id predictability and uncertainty
  coefficients: how much of routing the token alone explains, how much the
  domain adds; train-to-eval transfer of the token -> expert map.
- locality: consecutive-token same-expert rate against its chance values.
- agreement: routing agreement between two routings of the same tokens
  (router saturation, format-artifact test) and train-vs-eval overlap.
- token_types: Python token-type labels of BPE tokens via `tokenize`.
- perturb: format perturbations with a map from original to perturbed tokens.
- knockout: per-domain loss changes of single-expert knockouts.
- ngram: unigram and Kneser-Ney bigram baselines of model quality.

The stage: `collect` (model forwards: routing, losses, knockout), `measure` (a
run's numbers, with their nulls, into the table), `results` (the tidy table),
`pipeline` (what `stages/analyze.py` calls), `publish`, `report`, `figures`.
"""
