--@include stream_id_less
-- The entries of a batch that `consumer` holds, as a set: one XPENDING over the range
-- from the lowest to the highest entry id of the batch (bounded by what the consumer
-- holds). ARGV[first], ARGV[first + step], ... are the batch's entry ids.
local function held_entries(stream, group, consumer, argv, first, step)
  if #argv < first then return {} end
  local lo, hi = argv[first], argv[first]
  for i = first, #argv, step do
    local e = argv[i]
    if stream_id_less(e, lo) then lo = e end
    if stream_id_less(hi, e) then hi = e end
  end
  local held = {}
  for _, p in ipairs(redis.call('XPENDING', stream, group, lo, hi, 1000000, consumer)) do
    held[p[1]] = true
  end
  return held
end
