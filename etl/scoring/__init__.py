"""Scoring one call: segmentation, per-segment scores, per-call summaries, conversation metrics,
escalation rules, recomputation from stored segments and the daily rollup.
"""
