--@include fields
-- The job record's key for an entry: the producer's `id` field, else the entry id.
local function job_id_of(entry_id, flat)
  local id = get_field(flat, 'id')
  if id == nil or id == '' then return entry_id end
  return id
end
