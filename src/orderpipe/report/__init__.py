"""`orderpipe report`: one self-contained HTML page (data, models, drift, stream, energy) that
opens offline in any browser: inline SVG charts and CSS, no script, nothing fetched.

Modules: `build` (run_report: every section, then the page written), `page` (the Chart, Table
and Section types and the HTML rendering), `charts` (matplotlib figures as inline SVG) and the
`sections` package (one module per section).

matplotlib is imported only here (through `charts`), so every other command starts without it.
"""
