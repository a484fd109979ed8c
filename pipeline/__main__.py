"""``python -m pipeline`` runs the command-line interface."""

from pipeline.cli.main import main

raise SystemExit(main())
