--@include valid_job_id
-- The job record's key for an entry: the producer's `id` field, else the entry id. An id
-- that breaks the contract (or appears twice) is no id, as in streamjobs.contract.job_id_of.
local function job_id_of(entry_id, flat)
  local id = nil
  for i = 1, #flat, 2 do
    if flat[i] == 'id' then
      if id ~= nil then return entry_id end
      id = flat[i + 1]
    end
  end
  if id == nil or not valid_job_id(id) then return entry_id end
  return id
end
