"""``python -m broker`` is ``fedbroker``."""

from broker.console import main

raise SystemExit(main())
