-- Fields of one stream entry at most: streamjobs.contract.MAX_FIELDS (one XADD re-adds an
-- entry, and Lua's unpack() takes ~8,000 values).
local MAX_FIELDS = 256
