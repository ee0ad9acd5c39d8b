"""The recipe gallery and the quickstart's assets, shipped as ``kdlang.recipes`` so that
``kdlang run`` finds its embedded default recipe wherever kdlang is installed."""
