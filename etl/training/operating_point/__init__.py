"""The escalation operating point of a model version: rules and a confidence floor chosen on calls
of its training speakers (``selection``), whose customer sides come from one of two producers:
generated phone calls scored as nightly scoring scores them (``generated_calls``, ``ser train``
for telephony) or pseudo-calls of clip predictions (``pseudo_calls``, when no call can be made).
:mod:`etl.training.cv_calibration` runs them with the fold models; the record is stored in
``params["calibration"]["operating_point"]``.
"""
