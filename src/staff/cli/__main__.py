"""`python -m staff.cli`: the `staff` command."""

from . import main

main()
