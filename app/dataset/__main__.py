"""`python -m app.dataset`."""

from .cli import main

raise SystemExit(main())
