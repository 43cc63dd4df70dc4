"""`python -m winch` runs the `winch` command line."""

from winch.cli import main

raise SystemExit(main())
