"""Allows `python -m tunestack`."""

from tunestack.cli import main

raise SystemExit(main())
