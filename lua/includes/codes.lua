-- Return codes shared by every script; held against engine.codes.Code by a test.
local OK = 0
local NOT_FOUND = -1
local DUPLICATE = -2
local WRONG_STATE = -3
local NOT_OWNER = -4
local ALREADY = -5
local DEDUPLICATED = -6
local REQUESTED = -7
