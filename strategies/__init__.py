"""JohnLocke's built-in peer-selection strategies.

Installed as the ``johnlocke_strategies`` package and registered under the
``johnlocke.strategies`` entry-point group in pyproject.toml, the same way a third-party plugin
registers its own. Each module is written exactly as an operator's plugin would be.
"""
