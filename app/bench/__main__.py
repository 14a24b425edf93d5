"""`python -m app.bench`."""

from .cli import main

raise SystemExit(main())
