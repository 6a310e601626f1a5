-- Is `id` a job id by the contract's JOB_ID_PATTERN ([!-~]{1,128}: printable ASCII, no
-- spaces)? The same rule as streamjobs.contract.JOB_ID.
local function valid_job_id(id)
  return #id >= 1 and #id <= 128 and string.find(id, '^[!-~]+$') ~= nil
end
