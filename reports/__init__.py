"""Self-contained HTML reports: model versions, nightly batches, single calls, and an index.

``queries`` reads the database into DataFrames, ``charts`` draws inline SVG, ``render`` fills
Jinja2 templates (autoescaped), ``build`` ties them together and writes one file per report.
"""
