"""The data path in Arrow: artifacts written and read batch by batch (:mod:`.io`), sources read
by pyarrow (:mod:`.sources`), and expressions computed as Arrow kernels (:mod:`.expr`, with the
built-in functions in :mod:`.functions`)."""
