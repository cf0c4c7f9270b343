"""`python -m bench all ...`: see bench/suite.py."""

from bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main())
