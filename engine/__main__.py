from streamjobs.cli import main

raise SystemExit(main())
