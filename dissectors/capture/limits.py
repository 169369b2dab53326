"""Limits shared by the record walkers."""

MAX_RECORD = 64 << 20  # a record claiming more than this is treated as garbage (never allocated)
PROGRESS_STEP = 8 << 20  # publish counters and drop mapped pages behind the reader every 8 MiB
BATCH_BYTES = 64 << 10  # keyed walks hand over a list of segments per this many capture bytes (cache-sized)
