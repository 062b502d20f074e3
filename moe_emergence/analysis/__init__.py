"""Routing analysis: pure functions over per-token routing arrays, figures and the report.

One MoE layer's routing is given as aligned per-token arrays: `expert` [N]
(top-1 choice), `domain` [N] (integer codes), `doc` [N] (document ids, the
unit of resampling), `token_id` [N] and `position` [N] (index of the token
within its document). The `analyze` stage fills these from the trained
checkpoints; everything here is testable without a model.

Modules by concern:
- information: entropy and mutual information of count tables (one definition).
- specialization: P(expert | domain), lift, purity, I(E;D)/H(D) with a
  document-level permutation baseline and bootstrap CI.
- token_identity: held-out token-id predictability and uncertainty
  coefficients: how much of routing the token alone explains, how much the
  domain adds; train-to-eval transfer of the token -> expert map.
- locality: consecutive-token same-expert rate against its chance values.
- agreement: routing agreement between two routings of the same tokens
  (router saturation, format-artifact test) and train-vs-eval overlap of
  per-domain expert distributions.
- token_types: Python token-type labels of BPE tokens via `tokenize`.
- perturb: format perturbations with a map from original to perturbed tokens.
- knockout: per-domain loss deltas of single-expert knockouts.
- layer: every per-layer metric of one layer's routing in one call.
- figures, report: PNGs and the Markdown report built from the numbers.
"""
