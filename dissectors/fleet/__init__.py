"""fleet: many captures analysed on a Dask cluster into one table, a row per migration.

At the edge, like the outputs: it runs the CLI pipeline's ``analyze_file`` on every capture (on Dask
workers, or in a plain loop) and turns each report into rows. ``inputs`` finds the captures (paths,
directories, globs, lists, fsspec URLs), ``rows`` holds the table's schema and builds rows from a report,
``task`` is what a worker runs for one capture, ``runner`` maps a task over captures on Dask (a local
cluster by default), ``tables`` writes Parquet / CSV / JSON lines, ``summary`` the terminal summary and
the progress bar.

Dask, distributed and pyarrow are optional dependencies (``pip install 'migshark[fleet]'``): importing
this package does not need them; running on Dask or writing Parquet does.
"""
