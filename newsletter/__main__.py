"""python -m newsletter, and the console script ``newsletter``."""

import gc

# Before the imports: start-up makes some 300,000 objects that live until the process ends, and
# the cyclic collector would walk them again and again while they are made (see cli.main).
gc.set_threshold(100_000, 10, 10)

from .cli import main  # noqa: E402

if __name__ == "__main__":
    main()
