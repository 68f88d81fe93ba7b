"""`python -m engine --protocol-fd N`: start an engine process (see engine.worker)."""

from engine.worker import main

raise SystemExit(main())
