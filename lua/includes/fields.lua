-- Job fields are kept as a flat Lua array {name1, value1, name2, value2, ...}, exactly as
-- XADD takes and XRANGE returns them, so payloads stay byte-exact (no JSON inside Lua).
local function get_field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end

local function set_field(flat, name, value)
  for i = 1, #flat, 2 do
    if flat[i] == name then flat[i + 1] = value; return end
  end
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
