"""``python -m freqkit`` (and so ``torchrun -m freqkit``) runs the command line."""

from freqkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
