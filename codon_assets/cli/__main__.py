"""`python -m codon_assets.cli`: the same as the `codon-assets` command."""

import sys

from codon_assets.cli import main

sys.exit(main())
