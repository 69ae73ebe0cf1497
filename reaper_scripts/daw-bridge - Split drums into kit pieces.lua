-- @description daw-bridge: Split drums into kit pieces (kick, snare, toms, cymbals)
-- @author daw-bridge contributors
-- @license GPL-3.0-or-later
-- Thin action: all work happens in daw_bridge_lib.lua and the daw-bridge client.

local lib = dofile(({ reaper.get_action_context() })[2]:match("^(.*[/\\])") .. "daw_bridge_lib.lua")
lib.run({ mode = "kit" })
