"""``python -m fusmae_fast.pretrain`` and ``torchrun -m fusmae_fast.pretrain``."""

from fusmae_fast.pretrain.cli import main

raise SystemExit(main())
