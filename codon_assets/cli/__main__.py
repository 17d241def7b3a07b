"""`python -m codon_assets.cli`: the same as the `codon-assets` command."""

from codon_assets.cli import console

console()
