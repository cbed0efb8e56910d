from reverbpy.cli import main

raise SystemExit(main())
