"""``python -m broker`` is ``fedbroker``."""

from broker.cli import main

raise SystemExit(main())
