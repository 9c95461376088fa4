"""``python -m echomimic.cli``: the same command line as the ``echomimic`` script."""

from . import main

if __name__ == "__main__":  # pragma: no cover
    main()
