"""``python -m chaveiro``: the command line."""

from chaveiro._cli import main

raise SystemExit(main())
