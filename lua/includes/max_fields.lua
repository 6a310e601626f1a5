-- Fields of one stream entry at most: streamjobs.contract.MAX_FIELDS (one XADD re-adds an
-- entry, and Lua's unpack() takes ~8,000 values). A job handed to enqueue has at most
-- MAX_JOB_FIELDS: the engine may add `id`, `id_claimed` and `attempts` to its entry.
local MAX_FIELDS = 256
local MAX_JOB_FIELDS = 253
