from conelib.cli import main

raise SystemExit(main())
