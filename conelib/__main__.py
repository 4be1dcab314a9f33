from conelib.tools.cli import main

raise SystemExit(main())
