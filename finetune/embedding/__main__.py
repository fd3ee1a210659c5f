"""`python -m finetune.embedding ...`: see finetune/embedding/cli.py."""

import sys

from finetune.embedding.cli import main

sys.exit(main())
