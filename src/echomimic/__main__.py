"""``python -m echomimic``: the same command line as the ``echomimic`` script."""

from .cli import main

if __name__ == "__main__":
    main()
