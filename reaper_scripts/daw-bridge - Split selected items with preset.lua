-- @description daw-bridge: Split selected items with preset...
-- @author daw-bridge contributors
-- @license GPL-3.0-or-later
-- Thin action: all work happens in daw_bridge_lib.lua and the daw-bridge client.

local lib = dofile(({ reaper.get_action_context() })[2]:match("^(.*[/\\])") .. "daw_bridge_lib.lua")
local preset = lib.choose_preset()
if preset then
  lib.run(lib.stem_set_options({ preset = preset }))
end
