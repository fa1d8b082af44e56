import sys

from mobileface.cli.main import main

sys.exit(main())
