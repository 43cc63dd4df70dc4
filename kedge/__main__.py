"""`python -m kedge` runs the kedge command line."""

from kedge.cli import main

raise SystemExit(main())
