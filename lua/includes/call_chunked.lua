-- redis.call(cmd, key, <values of list>) in calls of at most 1,000 values (an even count,
-- so pairs stay together): Lua's unpack() takes ~8,000 values.
local function call_chunked(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(#list, i + 999)))
  end
end
