"""``python -m recurrl`` (also what ``torchrun -m recurrl`` runs)."""

import sys

from recurrl.app.cli import main

sys.exit(main())
