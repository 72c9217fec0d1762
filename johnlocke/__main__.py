from johnlocke.cli import main

raise SystemExit(main())
