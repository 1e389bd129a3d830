"""Build-time tools: they write files that are committed (docs tables, dashboards); not part
of the installed package."""
