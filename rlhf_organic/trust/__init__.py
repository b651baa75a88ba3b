"""Per-user trust: how much to believe each user, by one of several schemes (``schemes/``).

``stage.compute_trust`` runs a scheme on an ingested dataset and writes the trust folder; the
schemes themselves are pure functions of a ``data.FeedbackData``.
"""
