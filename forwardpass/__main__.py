from forwardpass.cli import main

raise SystemExit(main())
