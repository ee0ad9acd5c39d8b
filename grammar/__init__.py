"""The kdlang grammar (``kd.lark``), shipped as package data of ``kdlang.grammar``."""
