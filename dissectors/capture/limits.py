"""Limits shared by the record walkers."""

MAX_RECORD = 64 << 20  # a record claiming more than this is treated as garbage (never allocated)
PROGRESS_STEP = 8 << 20  # publish counters and drop mapped pages behind the reader every 8 MiB
BATCH_BYTES = 256 << 10  # keyed walks hand over a list of segments per this many capture bytes (16-256 KiB: all
# within 3 % segment by segment; 256 KiB gives the coalescer runs of ~64 KiB on a 5-connection migration)
