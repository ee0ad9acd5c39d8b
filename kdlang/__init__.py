"""kdlang: a declarative language and compiler for knowledge-distillation recipes."""

__version__ = "0.1.0"
