"""``python -m feedservice`` runs the command line."""

from feedservice.cli import main

raise SystemExit(main())
