"""``python -m recurrl`` (also what ``torchrun -m recurrl`` runs)."""

import sys

from recurrl.cli import main

sys.exit(main())
