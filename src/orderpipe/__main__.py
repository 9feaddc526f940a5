"""`python -m orderpipe` runs the same CLI as the `orderpipe` console script."""

from orderpipe.cli import app

app(prog_name="orderpipe")
