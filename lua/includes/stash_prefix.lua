-- A delayed or dead job's own fields are kept under 'f:<name>' (in its record or its
-- dead entry): the one place that adds and strips the prefix.
local STASH = 'f:'

-- Append `flat`'s pairs to `out` with their names prefixed.
local function add_stashed(out, flat)
  for i = 1, #flat, 2 do
    out[#out + 1] = STASH .. flat[i]
    out[#out + 1] = flat[i + 1]
  end
  return out
end

-- The prefixed pairs of `all`, prefix stripped; and the prefixed names found.
local function strip_stashed(all)
  local flat, names = {}, {}
  for i = 1, #all, 2 do
    local name = all[i]
    if string.sub(name, 1, #STASH) == STASH then
      flat[#flat + 1] = string.sub(name, #STASH + 1)
      flat[#flat + 1] = all[i + 1]
      names[#names + 1] = name
    end
  end
  return flat, names
end
