-- A unique-while-active job frees its dedup key at its final transition (the record's
-- `unique` field names the key; another job's hold of it is left alone).
local function free_unique_key(dk, id)
  if dk and redis.call('GET', dk) == id then redis.call('DEL', dk) end
end

local function free_unique(key, id)
  free_unique_key(redis.call('HGET', key, 'unique'), id)
end
