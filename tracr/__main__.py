"""`python -m tracr`: the command line (see tracr.cli)."""

from tracr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
