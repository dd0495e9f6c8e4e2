"""Training: model families, speaker normalisation, phone-line augmentation, speaker-independent
evaluation, calibration, the escalation operating point, safe artifacts and the model registry.
"""
