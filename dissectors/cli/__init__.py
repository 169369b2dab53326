"""cli: the ``migshark`` command line. It only wires the rooms together: ``pipeline`` opens a capture,
runs it through ``tcp`` into a sink factory (the analysis or the dissect printer), and ``main`` hands the
result to ``outputs``. Exit codes: 0 clean, 1 findings, 2 usage or input error."""
