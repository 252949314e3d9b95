"""``python -m state_middleware serve --upstream URL``: see ``state_middleware.cli``."""

from .cli import main

raise SystemExit(main())
