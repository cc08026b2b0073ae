from pirsyncd.cli import main

raise SystemExit(main())
