"""Self-contained HTML reports: model versions, nightly batches, single calls, and an index.

``queries`` reads the database into DataFrames, ``contexts`` shapes them into one template
context per report, ``charts`` draws inline SVG, ``render`` fills Jinja2 templates (autoescaped),
``build`` ties them together and writes one file per report. ``common`` holds what they share
(file names, the atomic write, value coercions).
"""
