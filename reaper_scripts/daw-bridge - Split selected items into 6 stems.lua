-- @description daw-bridge: Split selected items into 6 stems (adds guitar and piano)
-- @author daw-bridge contributors
-- @license GPL-3.0-or-later
-- Thin action: all work happens in daw_bridge_lib.lua and the daw-bridge client.

local lib = dofile(({ reaper.get_action_context() })[2]:match("^(.*[/\\])") .. "daw_bridge_lib.lua")
lib.run({ model = "htdemucs_6s" })
