-- daw-bridge: the code every daw-bridge action shares.
--
-- Deliberately thin. Python (`daw-bridge reaper run`) decides what audio an item
-- plays, talks to the server and writes a status file; this file only copies
-- REAPER's item values into a request, starts that process without waiting,
-- polls its status from reaper.defer (REAPER never blocks) and inserts the
-- stems in one undo point. Licence: GPL-3.0-or-later.

local M = {}

M.SECTION = "daw-bridge"
M.DEFAULTS = {
  address = "tcp://127.0.0.1:5797",
  model = "",            -- empty: the server's model
  out_dir = "",          -- empty: the project's media folder
  autostart = "1",
  colors = "1",
  mute_original = "0",
  midi = "",             -- e.g. "drums,bass"
  stem_set = "4",        -- what "Split with preset" separates: 4, 2 or 6
  keep = "",             -- stems to keep, e.g. "vocals" or "drums bass"; the rest become "rest"
  drum_kit = "",         -- a drum-kit model: splits also split their drums into pieces
}
local FINAL = { done = true, failed = true, cancelled = true }
local START_TIMEOUT = 30 -- seconds without any status file before we give up
-- The runner writes heartbeat=<os.time()> every second; this long without one means it died.
local HEARTBEAT_TIMEOUT = 10

-- Item and take values a stem item copies so it plays exactly in place of the original
-- (take FX, take envelopes and stretch markers are copied in copy_playback below).
local ITEM_FIELDS = {
  "D_POSITION", "D_LENGTH", "D_VOL", "D_FADEINLEN", "D_FADEOUTLEN", "D_FADEINLEN_AUTO",
  "D_FADEOUTLEN_AUTO", "C_FADEINSHAPE", "C_FADEOUTSHAPE", "D_FADEINDIR", "D_FADEOUTDIR",
  "D_SNAPOFFSET", "C_BEATATTACHMODE", "C_AUTOSTRETCH",
}
local TAKE_FIELDS = {
  "D_PLAYRATE", "B_PPITCH", "D_PITCH", "I_CHANMODE", "D_VOL", "D_PAN", "D_PANLAW",
  "I_PITCHMODE", "I_STRETCHFLAGS", "F_STRETCHFADESIZE", "I_TAKEFX_NCH",
}

---------------------------------------------------------------------------------------
-- Small helpers

-- The resource path's own separator: right on every system REAPER runs on.
local function separator()
  return reaper.GetResourcePath():find("\\", 1, true) and "\\" or "/"
end

local function message(text)
  reaper.ShowMessageBox(text, "daw-bridge", 0)
end

function M.read_keyvalue(path)
  local file = io.open(path, "rb")
  if not file then return nil end
  local values = {}
  for line in file:lines() do
    local key, value = line:match("^([^=]+)=(.*)$")
    if key then values[key] = (value:gsub("\r$", "")) end
  end
  file:close()
  return values
end

local function write_lines(path, lines)
  local temporary = path .. ".tmp"
  local file = assert(io.open(temporary, "wb"))
  file:write(table.concat(lines, "\n"), "\n")
  file:close()
  os.remove(path)
  assert(os.rename(temporary, path))
end

local function split_csv(text)
  local list = {}
  for part in (text or ""):gmatch("[^,]+") do list[#list + 1] = part end
  return list
end

-- One argument for ExecProcess. Double quotes group an argument the same way for
-- Windows' CreateProcess and for the POSIX word splitting REAPER does elsewhere;
-- characters that would be special inside them are refused, not half-escaped.
function M.quote(argument)
  if argument:find('["$`]') or argument:find("\\$") then
    error("daw-bridge cannot pass this path to a process safely: " .. argument, 0)
  end
  return '"' .. argument .. '"'
end

---------------------------------------------------------------------------------------
-- Settings (ExtState) and the install config

function M.settings()
  local values = {}
  for key, default in pairs(M.DEFAULTS) do
    local stored = reaper.GetExtState(M.SECTION, key)
    values[key] = stored ~= "" and stored or default
  end
  return values
end

function M.save_setting(key, value)
  reaper.SetExtState(M.SECTION, key, value, true)
end

local function data_folder()
  local sep = separator()
  return table.concat({ reaper.GetResourcePath(), "Data", "daw-bridge" }, sep) .. sep
end

-- Written by `daw-bridge install-reaper`, so ReaPack and manual installs find it too.
function M.config()
  local path = data_folder() .. "daw-bridge.conf"
  local config = M.read_keyvalue(path)
  if not config or not config["arg.1"] then
    message("daw-bridge is not set up for this REAPER.\n\nHow to fix: in a terminal run\n"
      .. "    daw-bridge install-reaper\nthen run this action again.")
    return nil
  end
  return config
end

---------------------------------------------------------------------------------------
-- What is sent: each selected item's take, source and span values, unchanged.

-- Everything a stem item copies, as it was at the click: values, stretch markers, envelopes.
local function snapshot(item, take)
  local place = { item = {}, take = {}, markers = {}, envelopes = {}, fx_envelopes = {},
    fx_count = reaper.TakeFX_GetCount(take) }
  for _, name in ipairs(ITEM_FIELDS) do place.item[name] = reaper.GetMediaItemInfo_Value(item, name) end
  for _, name in ipairs(TAKE_FIELDS) do place.take[name] = reaper.GetMediaItemTakeInfo_Value(take, name) end
  for index = 0, reaper.GetTakeNumStretchMarkers(take) - 1 do
    local _, pos, srcpos = reaper.GetTakeStretchMarker(take, index)
    place.markers[#place.markers + 1] = {
      pos = pos, srcpos = srcpos, slope = reaper.GetTakeStretchMarkerSlope(take, index),
    }
  end
  for index = 0, reaper.CountTakeEnvelopes(take) - 1 do
    local envelope = reaper.GetTakeEnvelope(take, index)
    local ok, chunk = reaper.GetEnvelopeStateChunk(envelope, "", false)
    local _, fx, parameter = reaper.Envelope_GetParentTake(envelope)
    if ok and fx >= 0 then
      place.fx_envelopes[#place.fx_envelopes + 1] = { fx = fx, parameter = parameter, chunk = chunk }
    elseif ok then
      place.envelopes[#place.envelopes + 1] = chunk
    end
  end
  return place
end

-- What a stem item cannot take over from `item`: said before the split starts.
local function wont_follow(item, take)
  local list = {}
  local edits = math.floor(reaper.GetMediaItemTakeInfo_Value(take, "IP_SPECEDIT:CNT"))
  if edits > 0 then list[#list + 1] = edits .. " spectral edit(s)" end
  if reaper.GetMediaItemInfo_Value(item, "B_ALLTAKESPLAY") == 1 and reaper.CountTakes(item) > 1 then
    list[#list + 1] = "its other takes (all takes play; only the active take is split)"
  end
  return list
end

local function describe_source(take, fields)
  local source = reaper.GetMediaItemTake_Source(take)
  local kind = reaper.GetMediaSourceType(source)
  if kind == "SECTION" then
    local _, offset, length, reversed = reaper.PCM_Source_GetSectionInfo(source)
    fields.section, fields.section_offset, fields.section_length = "1", offset, length
    fields.reversed = reversed and "1" or "0"
    source = reaper.GetMediaSourceParent(source)
    kind = reaper.GetMediaSourceType(source)
  end
  fields.type = kind
  fields.file = reaper.GetMediaSourceFileName(source)
  fields.source_length = (reaper.GetMediaSourceLength(source))
end

local function find_track(project, guid)
  for index = 0, reaper.CountTracks(project) - 1 do
    local track = reaper.GetTrack(project, index)
    if reaper.GetTrackGUID(track) == guid then return track end
  end
  return nil
end

-- A stem item's folder remembers the track it was split from: new stems go below it.
local function home_track(project, track, job)
  if job == "" then return track end
  local folder = reaper.GetParentTrack(track)
  if not folder then return track end
  local _, guid = reaper.GetSetMediaTrackInfo_String(folder, "P_EXT:daw_bridge_source", "", false)
  return find_track(project, guid) or folder
end

-- The project tempo where an item starts, so its MIDI can be written at it.
local function quarter_notes_per_minute(project, position)
  local qn = reaper.TimeMap2_timeToQN(project, position)
  return 60 / (reaper.TimeMap2_QNToTime(project, qn + 1) - reaper.TimeMap2_QNToTime(project, qn))
end

local function stretch_text(markers)
  local parts = {}
  for _, marker in ipairs(markers) do
    parts[#parts + 1] = string.format("%.17g:%.17g", marker.pos, marker.srcpos)
  end
  return table.concat(parts, ";")
end

-- Returns the entries to send, the names of items skipped here and, per item, what its
-- stems cannot take over. Stem items (made by an earlier split) stand for their job: one
-- entry per job. Every entry remembers its project: the user may switch tabs meanwhile.
function M.collect_items(mode)
  local entries, skipped, jobs, warnings = {}, {}, {}, {}
  for index = 0, reaper.CountSelectedMediaItems(0) - 1 do
    local item = reaper.GetSelectedMediaItem(0, index)
    local project = reaper.GetItemProjectContext(item)
    local take = reaper.GetActiveTake(item)
    local position = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
    if not take then
      skipped[#skipped + 1] = string.format("empty item at %.3f s", position)
    elseif reaper.TakeIsMIDI(take) then
      skipped[#skipped + 1] = string.format("MIDI item at %.3f s", position)
    else
      local _, name = reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", "", false)
      local _, job = reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:daw_bridge_job", "", false)
      local _, first_name = reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:daw_bridge_name", "", false)
      if mode ~= "apply" then job = "" end
      if job ~= "" then name = first_name end
      local _, source_item = reaper.GetSetMediaItemInfo_String(item, "GUID", "", false)
      if job ~= "" then -- a stem stands for the item it was split from
        local _, from = reaper.GetSetMediaItemInfo_String(item, "P_EXT:daw_bridge_source", "", false)
        if from ~= "" then source_item = from end
      end
      local place = snapshot(item, take)
      local fields = {
        startoffs = reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS"),
        length = reaper.GetMediaItemInfo_Value(item, "D_LENGTH"),
        playrate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE"),
        loop = reaper.GetMediaItemInfo_Value(item, "B_LOOPSRC"),
        name = name,
        bpm = quarter_notes_per_minute(project, position),
        stretch = stretch_text(place.markers),
      }
      fields.job = job
      _, fields.stem = reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:daw_bridge_stem", "", false)
      describe_source(take, fields)
      if job == "" or not jobs[job] then
        jobs[job] = job ~= ""
        entries[#entries + 1] = {
          key = tostring(#entries + 1), item = item, take = take, name = name, job = job,
          track = home_track(project, reaper.GetMediaItem_Track(item), job), fields = fields,
          place = place, project = project, source_item = source_item,
        }
        local missing = wont_follow(item, take)
        if #missing > 0 then
          local _, track_name = reaper.GetTrackName(reaper.GetMediaItem_Track(item))
          warnings[#warnings + 1] = string.format("%s (track %s, at %.3f s): %s",
            name ~= "" and name or "item", track_name, position, table.concat(missing, ", "))
        end
      end
    end
  end
  return entries, skipped, warnings
end

local function number_text(value)
  if type(value) == "number" then return string.format("%.17g", value) end
  return tostring(value)
end

local function request_lines(options, entries)
  local lines, keys = { "version=1" }, {}
  for key, value in pairs(options) do lines[#lines + 1] = key .. "=" .. value end
  for _, entry in ipairs(entries) do
    keys[#keys + 1] = entry.key
    for name, value in pairs(entry.fields) do
      lines[#lines + 1] = "item." .. entry.key .. "." .. name .. "=" .. number_text(value)
    end
  end
  lines[#lines + 1] = "items=" .. table.concat(keys, ",")
  return lines
end

---------------------------------------------------------------------------------------
-- Insertion: one undo point, a folder below each source track, one child per stem.

local function track_guid(track) return reaper.GetTrackGUID(track) end

local function set_name(track, name)
  reaper.GetSetMediaTrackInfo_String(track, "P_NAME", name, true)
end

local function color_of(status, stem)
  local r, g, b = (status["stem." .. stem .. ".color"] or ""):match("(%d+),(%d+),(%d+)")
  if not r then return nil end
  return reaper.ColorToNative(tonumber(r), tonumber(g), tonumber(b)) | 0x1000000
end

local function ext(track, key)
  local _, value = reaper.GetSetMediaTrackInfo_String(track, "P_EXT:" .. key, "", false)
  return value
end

-- Whether `track` sits anywhere inside the folder track whose GUID is `folder_guid`.
local function inside(track, folder_guid)
  local parent = reaper.GetParentTrack(track)
  while parent do
    if track_guid(parent) == folder_guid then return true end
    parent = reaper.GetParentTrack(parent)
  end
  return false
end

-- The stem folder an earlier click made for `source` and `title`, if it still has
-- every child we need: later clicks on the same track add to the same tracks.
local function existing_folder(project, source, title, children)
  local guid = track_guid(source)
  for index = 0, reaper.CountTracks(project) - 1 do
    local folder = reaper.GetTrack(project, index)
    if ext(folder, "daw_bridge_source") == guid and ext(folder, "daw_bridge_title") == title then
      local tracks, folder_guid = {}, track_guid(folder)
      for child_index = index + 1, reaper.CountTracks(project) - 1 do
        local child = reaper.GetTrack(project, child_index)
        if not inside(child, folder_guid) then break end
        -- Deeper tracks (a Drums stem's kit pieces) belong to their own folder.
        if track_guid(reaper.GetParentTrack(child)) == folder_guid then
          tracks[ext(child, "daw_bridge_child")] = child
        end
      end
      local complete = true
      for _, child in ipairs(children) do complete = complete and tracks[child.id] ~= nil end
      if complete then return tracks end
    end
  end
  return nil
end

-- A folder track right below `source`, named after it, with `children` inside.
-- InsertTrackInProject, not InsertTrackAtIndex: that one works on the active tab only.
local function create_folder(project, source, title, children, status, colors)
  local index = math.floor(reaper.GetMediaTrackInfo_Value(source, "IP_TRACKNUMBER"))
  local depth = math.floor(reaper.GetMediaTrackInfo_Value(source, "I_FOLDERDEPTH"))
  reaper.InsertTrackInProject(project, index, 0)
  local folder = reaper.GetTrack(project, index)
  local _, source_name = reaper.GetTrackName(source)
  set_name(folder, source_name .. " stems" .. (title ~= "" and (" - " .. title) or ""))
  reaper.GetSetMediaTrackInfo_String(folder, "P_EXT:daw_bridge_source", track_guid(source), true)
  reaper.GetSetMediaTrackInfo_String(folder, "P_EXT:daw_bridge_title", title, true)
  reaper.SetMediaTrackInfo_Value(folder, "I_FOLDERDEPTH", 1)
  local tracks = {}
  for offset, child in ipairs(children) do
    reaper.InsertTrackInProject(project, index + offset, 0)
    local track = reaper.GetTrack(project, index + offset)
    set_name(track, child.label)
    reaper.GetSetMediaTrackInfo_String(track, "P_EXT:daw_bridge_child", child.id, true)
    local color = colors and color_of(status, child.stem)
    if color then reaper.SetMediaTrackInfo_Value(track, "I_CUSTOMCOLOR", color) end
    reaper.SetMediaTrackInfo_Value(track, "I_FOLDERDEPTH", 0)
    tracks[child.id] = track
    tracks.last = track
  end
  -- The folder takes over whatever folders the source track used to close.
  reaper.SetMediaTrackInfo_Value(tracks.last, "I_FOLDERDEPTH", -1 + math.min(depth, 0))
  if depth < 0 then reaper.SetMediaTrackInfo_Value(source, "I_FOLDERDEPTH", 0) end
  return tracks
end

-- Drum-kit pieces as children of `parent` (a Drums stem track or the track of the drums
-- item): `parent` becomes a folder, the pieces go right below it and the last one closes
-- it, plus whatever folders `parent` closed before. An earlier kit folder is reused.
local function kit_tracks(project, parent, pieces, status, colors)
  local tracks, parent_guid = {}, track_guid(parent)
  local index = math.floor(reaper.GetMediaTrackInfo_Value(parent, "IP_TRACKNUMBER"))
  local depth = math.floor(reaper.GetMediaTrackInfo_Value(parent, "I_FOLDERDEPTH"))
  if depth == 1 then
    for child_index = index, reaper.CountTracks(project) - 1 do
      local child = reaper.GetTrack(project, child_index)
      if not inside(child, parent_guid) then break end
      if track_guid(reaper.GetParentTrack(child)) == parent_guid then
        tracks[ext(child, "daw_bridge_child")] = child
      end
    end
  end
  local missing = {}
  for _, piece in ipairs(pieces) do
    if not tracks["kit:" .. piece] then missing[#missing + 1] = piece end
  end
  local last
  for offset, piece in ipairs(missing) do
    reaper.InsertTrackInProject(project, index + offset - 1, 0)
    local track = reaper.GetTrack(project, index + offset - 1)
    set_name(track, status["stem.kit:" .. piece .. ".label"] or piece)
    reaper.GetSetMediaTrackInfo_String(track, "P_EXT:daw_bridge_child", "kit:" .. piece, true)
    local color = colors and color_of(status, "kit:" .. piece)
    if color then reaper.SetMediaTrackInfo_Value(track, "I_CUSTOMCOLOR", color) end
    reaper.SetMediaTrackInfo_Value(track, "I_FOLDERDEPTH", 0)
    tracks["kit:" .. piece], last = track, track
  end
  if last and depth ~= 1 then
    reaper.SetMediaTrackInfo_Value(parent, "I_FOLDERDEPTH", 1)
    reaper.SetMediaTrackInfo_Value(last, "I_FOLDERDEPTH", -1 + math.min(depth, 0))
  end
  return tracks
end

-- Built-in take envelopes (volume, pan, mute, pitch) have no "create" call: REAPER's way is
-- the item's state chunk. Each envelope block goes after the stem take's <SOURCE block, as
-- REAPER writes them, without its EGUID (REAPER gives the copy a new one).
local function add_envelope_blocks(item, blocks)
  if #blocks == 0 then return true end
  local ok, chunk = reaper.GetItemStateChunk(item, "", false)
  if not ok then return false end
  local out, depth, source_depth, inserted = {}, 0, nil, false
  for line in chunk:gmatch("[^\r\n]+") do
    out[#out + 1] = line
    local trimmed = line:match("^%s*(.-)%s*$")
    if trimmed:sub(1, 1) == "<" then
      depth = depth + 1
      if not source_depth and trimmed:match("^<SOURCE") then source_depth = depth end
    elseif trimmed == ">" then
      if source_depth == depth and not inserted then
        for _, block in ipairs(blocks) do
          for block_line in block:gmatch("[^\r\n]+") do
            if not block_line:match("^%s*EGUID ") then out[#out + 1] = block_line end
          end
        end
        inserted = true
      end
      depth = depth - 1
    end
  end
  return inserted and reaper.SetItemStateChunk(item, table.concat(out, "\n") .. "\n", false)
end

-- Take FX (with their parameter envelopes), take envelopes and stretch markers, so the
-- stem plays like the original. The stem's source starts `shift` seconds later in the
-- original source, so stretch markers move back by it. Returns what could not be copied.
local function copy_playback(entry, item, take, shift)
  local place, problems = entry.place, {}
  if not add_envelope_blocks(item, place.envelopes) then problems[#problems + 1] = "take envelopes" end
  take = reaper.GetActiveTake(item) -- a state chunk may give the item new take pointers
  local original = reaper.ValidatePtr2(entry.project, entry.take, "MediaItem_Take*") and entry.take
  local fx_count = original and reaper.TakeFX_GetCount(original) or 0
  if not original and place.fx_count > 0 then problems[#problems + 1] = "take FX (original deleted)" end
  for fx = 0, fx_count - 1 do reaper.TakeFX_CopyToTake(original, fx, take, fx, false) end
  for _, copy in ipairs(place.fx_envelopes) do
    local envelope = original and reaper.TakeFX_GetEnvelope(take, copy.fx, copy.parameter, true)
    if not (envelope and reaper.SetEnvelopeStateChunk(envelope, copy.chunk, false)) then
      problems[#problems + 1] = "an FX envelope"
    end
  end
  for _, marker in ipairs(place.markers) do
    if reaper.SetTakeStretchMarker(take, -1, marker.pos, marker.srcpos - shift) < 0 then
      problems[#problems + 1] = "a stretch marker"
    end
  end
  for index, marker in ipairs(place.markers) do
    if marker.slope ~= 0 then reaper.SetTakeStretchMarkerSlope(take, index - 1, marker.slope) end
  end
  return take, problems
end

-- Stem items remember the item they were split from: a later split of it replaces them.
local function remove_earlier(track, source_item, fresh)
  for index = reaper.CountTrackMediaItems(track) - 1, 0, -1 do
    local old = reaper.GetTrackMediaItem(track, index)
    local _, from = reaper.GetSetMediaItemInfo_String(old, "P_EXT:daw_bridge_source", "", false)
    if from == source_item and not fresh[old] then reaper.DeleteTrackMediaItem(track, old) end
  end
end

local function add_item(track, path, entry, offset, label, stem, fresh)
  if entry.source_item ~= "" then remove_earlier(track, entry.source_item, fresh) end
  local item = reaper.AddMediaItemToTrack(track)
  fresh[item] = true
  for name, value in pairs(entry.place.item) do reaper.SetMediaItemInfo_Value(item, name, value) end
  reaper.SetMediaItemInfo_Value(item, "B_LOOPSRC", 0)
  reaper.GetSetMediaItemInfo_String(item, "P_EXT:daw_bridge_source", entry.source_item, true)
  local take = reaper.AddTakeToMediaItem(item)
  reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFile(path))
  for name, value in pairs(entry.place.take) do reaper.SetMediaItemTakeInfo_Value(take, name, value) end
  reaper.SetMediaItemTakeInfo_Value(take, "D_STARTOFFS", offset)
  local problems = {}
  if not stem:match("^midi:") then
    take, problems = copy_playback(entry, item, take, (tonumber(entry.fields.startoffs) or 0) - offset)
  end
  local base = entry.name ~= "" and (entry.name .. " - ") or ""
  reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", base .. label, true)
  reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:daw_bridge_job", entry.job_id or "", true)
  reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:daw_bridge_stem", stem, true)
  reaper.GetSetMediaItemTakeInfo_String(take, "P_EXT:daw_bridge_name", entry.name, true)
  return item, problems
end

-- The children a group of items needs: stems in the server's order, then MIDI.
local function children_of(status, keys)
  local list, seen = {}, {}
  for _, key in ipairs(keys) do
    for _, stem in ipairs(split_csv(status["item." .. key .. ".stems"])) do
      if not seen[stem] then
        seen[stem] = true
        list[#list + 1] = { id = stem, stem = stem, label = status["stem." .. stem .. ".label"] or stem }
      end
    end
  end
  for _, key in ipairs(keys) do
    for _, kind in ipairs(split_csv(status["item." .. key .. ".midi"])) do
      if not seen["midi:" .. kind] then
        seen["midi:" .. kind] = true
        list[#list + 1] = { id = "midi:" .. kind, stem = kind,
          label = status["stem." .. kind .. ".midi_label"] or (kind .. " MIDI") }
      end
    end
  end
  return list
end

-- Inserts every finished item of `job` into the project its items belong to (whichever tab
-- is active now); the same code serves splits, presets and MIDI. Returns the number of
-- items inserted and the lines saying what could not be copied.
function M.insert(job, status)
  local settings, project = job.settings, job.project
  local groups, order, fresh, problems = {}, {}, {}, {}
  for _, entry in ipairs(job.entries) do
    local key = entry.key
    if status["item." .. key .. ".state"] == "done" and reaper.ValidatePtr2(project, entry.track, "MediaTrack*") then
      local id = track_guid(entry.track) .. "|" .. (status["item." .. key .. ".label"] or "")
      if not groups[id] then
        groups[id] = { track = entry.track, label = status["item." .. key .. ".label"] or "", entries = {} }
        order[#order + 1] = id
      end
      table.insert(groups[id].entries, entry)
    end
  end
  if #order == 0 then return 0, problems end
  local inserted = 0
  reaper.Undo_BeginBlock2(project)
  reaper.PreventUIRefresh(1)
  for _, id in ipairs(order) do
    local group = groups[id]
    local keys = {}
    for _, entry in ipairs(group.entries) do keys[#keys + 1] = entry.key end
    local children = children_of(status, keys)
    local tracks = {} -- the drum-kit action inserts pieces only: no stem folder
    if #children > 0 then
      tracks = existing_folder(project, group.track, group.label, children)
        or create_folder(project, group.track, group.label, children, status, settings.colors == "1")
    end
    for _, entry in ipairs(group.entries) do
      local key = entry.key
      local offset = tonumber(status["item." .. key .. ".offset"]) or 0
      entry.job_id = status["item." .. key .. ".job"]
      local missing, seen = {}, {}
      for _, stem in ipairs(split_csv(status["item." .. key .. ".stems"])) do
        local _, lost = add_item(tracks[stem], status["item." .. key .. ".stem." .. stem], entry,
          offset, status["stem." .. stem .. ".label"] or stem, stem, fresh)
        for _, what in ipairs(lost) do
          if not seen[what] then seen[what], missing[#missing + 1] = true, what end
        end
        inserted = inserted + 1
      end
      for _, kind in ipairs(split_csv(status["item." .. key .. ".midi"])) do
        add_item(tracks["midi:" .. kind], status["item." .. key .. ".midi." .. kind], entry, offset,
          status["stem." .. kind .. ".midi_label"] or kind, "midi:" .. kind, fresh)
        inserted = inserted + 1
      end
      local pieces = split_csv(status["item." .. key .. ".kit"])
      local kit_parent = status["item." .. key .. ".kit_parent"] or ""
      local parent = kit_parent == "" and entry.track or tracks[kit_parent]
      if #pieces > 0 and parent then
        local kit = kit_tracks(project, parent, pieces, status, settings.colors == "1")
        for _, piece in ipairs(pieces) do
          add_item(kit["kit:" .. piece], status["item." .. key .. ".kit." .. piece], entry, offset,
            status["stem.kit:" .. piece .. ".label"] or piece, "kit:" .. piece, fresh)
          inserted = inserted + 1
        end
      end
      if #missing > 0 then
        problems[#problems + 1] = (entry.name ~= "" and entry.name or ("item " .. key))
          .. ": could not copy " .. table.concat(missing, ", ")
      end
      if settings.mute_original == "1" and reaper.ValidatePtr2(project, entry.item, "MediaItem*") then
        reaper.SetMediaItemInfo_Value(entry.item, "B_MUTE", 1)
      end
    end
  end
  reaper.PreventUIRefresh(-1)
  reaper.TrackList_AdjustWindows(false)
  reaper.UpdateArrange()
  local what = job.mode == "kit" and "drum-kit pieces" or "stems"
  reaper.Undo_EndBlock2(project, "daw-bridge: insert " .. what, -1)
  return inserted, problems
end

---------------------------------------------------------------------------------------
-- Progress window and the defer loop

local WIDTH, ROW = 420, 22

local function item_problems(job, status)
  local lines = {}
  for _, entry in ipairs(job.entries) do
    local error = status["item." .. entry.key .. ".error"]
    if error and error ~= "" then
      local fix = status["item." .. entry.key .. ".fix"] or ""
      local name = entry.name ~= "" and entry.name or ("item " .. entry.key)
      lines[#lines + 1] = name .. ": " .. error .. (fix ~= "" and (" " .. fix) or "")
    end
  end
  for _, text in ipairs(job.skipped) do lines[#lines + 1] = "Skipped " .. text .. "." end
  return lines
end

local function cancel_button()
  return WIDTH - 90, 12 + ROW * (#M.job.entries + 1), 80, ROW
end

local function draw(job, status)
  gfx.set(0.16, 0.16, 0.18, 1)
  gfx.rect(0, 0, gfx.w, gfx.h, 1)
  gfx.set(0.9, 0.9, 0.9, 1)
  gfx.x, gfx.y = 10, 8
  local state = status and status.state or "starting"
  gfx.drawstr(job.cancelling and "Cancelling..." or ("daw-bridge: " .. state))
  for index, entry in ipairs(job.entries) do
    local key = entry.key
    local progress = tonumber(status and status["item." .. key .. ".progress"]) or 0
    local item_state = status and status["item." .. key .. ".state"] or "queued"
    local y = 8 + ROW * index
    gfx.set(0.3, 0.3, 0.34, 1)
    gfx.rect(10, y, WIDTH - 110, ROW - 4, 1)
    gfx.set(0.36, 0.7, 0.42, 1)
    gfx.rect(10, y, math.floor((WIDTH - 110) * progress), ROW - 4, 1)
    gfx.set(1, 1, 1, 1)
    gfx.x, gfx.y = 14, y + 2
    local name = entry.name ~= "" and entry.name or ("item " .. key)
    gfx.drawstr(string.format("%s: %s %d%%", name, item_state, math.floor(progress * 100 + 0.5)))
  end
  local x, y, w, h = cancel_button()
  gfx.set(0.5, 0.22, 0.22, 1)
  gfx.rect(x, y, w, h, 1)
  gfx.set(1, 1, 1, 1)
  gfx.x, gfx.y = x + 16, y + 3
  gfx.drawstr("Cancel")
  gfx.update()
end

local function clicked_cancel(job)
  local pressed = gfx.mouse_cap & 1 == 1
  local was = job.mouse_down
  job.mouse_down = pressed
  if not pressed or was then return false end
  local x, y, w, h = cancel_button()
  return gfx.mouse_x >= x and gfx.mouse_x <= x + w and gfx.mouse_y >= y and gfx.mouse_y <= y + h
end

local function request_cancel(job)
  if job.cancelling then return end
  job.cancelling = true
  local file = io.open(job.folder .. "cancel", "wb")
  if file then file:write("cancel\n") file:close() end
end

local function start(command, windows)
  return reaper.ExecProcess(command, windows and -2 or -1)
end

local function finish(job, status)
  if job.window then gfx.quit() end
  M.job = nil
  local problems = item_problems(job, status or {})
  if not status then
    message("The daw-bridge client did not start.\n\nHow to fix: run `daw-bridge install-reaper` "
      .. "in a terminal, then try again. Details may be in " .. job.folder .. "log.txt")
    return
  end
  if job.died then
    -- The runner cannot cancel its own jobs any more: `daw-bridge reaper cancel` does.
    request_cancel(job)
    start(job.prefix .. " " .. M.quote("cancel") .. " " .. M.quote(job.folder .. "request.txt"),
      job.windows)
    message("The daw-bridge client stopped without finishing (no sign of life for "
      .. HEARTBEAT_TIMEOUT .. " s); nothing was inserted and its server jobs are being "
      .. "cancelled.\n\nDetails may be in " .. job.folder .. "log.txt")
    return
  end
  if status.state == "cancelled" then return end
  if status.state == "failed" then
    local text = (status.error or "Splitting failed.")
    if status.fix and status.fix ~= "" then text = text .. "\n\nHow to fix: " .. status.fix end
    if #problems > 0 then text = text .. "\n\n" .. table.concat(problems, "\n") end
    message(text)
    return
  end
  if not reaper.ValidatePtr2(0, job.project, "ReaProject*") then
    local folders = {}
    for _, entry in ipairs(job.entries) do
      local folder = status["item." .. entry.key .. ".folder"]
      if folder and folder ~= "" then folders[#folders + 1] = folder end
    end
    message("The project tab of the split items was closed before the stems were ready, so "
      .. "nothing was inserted.\n\nThe stem files are in:\n" .. table.concat(folders, "\n"))
    return
  end
  local _, lost = M.insert(job, status)
  if #lost > 0 then
    problems[#problems + 1] = "Inserted, but not played exactly like the original:"
    for _, line in ipairs(lost) do problems[#problems + 1] = line end
  end
  if #problems > 0 then message("Some items were not split as asked:\n\n" .. table.concat(problems, "\n")) end
end

local function poll()
  local job = M.job
  if not job then return end
  -- A read that fails or finds no heartbeat (file locked, mid-replace) keeps the last good one.
  local read = M.read_keyvalue(job.folder .. "status.txt")
  if read and read.state and tonumber(read.heartbeat) then job.status = read end
  local status = job.status
  if job.window then
    local char = gfx.getchar()
    if char < 0 then
      job.window = false -- closed: keep working in the background
    else
      if char == 27 or clicked_cancel(job) then request_cancel(job) end
      draw(job, status)
    end
  end
  if status and FINAL[status.state] then return finish(job, status) end
  if not status and reaper.time_precise() - job.started > START_TIMEOUT then
    return finish(job, nil)
  end
  if status and os.time() - tonumber(status.heartbeat) > HEARTBEAT_TIMEOUT then
    job.died = true
    return finish(job, status)
  end
  reaper.defer(poll)
end

---------------------------------------------------------------------------------------
-- Entry point of every split action

-- options: model, two_stems, preset (all optional; settings fill the rest)
function M.run(options)
  if M.job then
    message("daw-bridge is already working on a split; wait for it or cancel it.")
    return
  end
  local config = M.config()
  if not config then return end
  local settings = M.settings()
  local entries, skipped, warnings = M.collect_items(options.mode)
  if #entries == 0 then
    local why = #skipped > 0 and ("\n\nSkipped: " .. table.concat(skipped, ", ")) or ""
    message("Select one or more audio items to split." .. why)
    return
  end
  if #warnings > 0 then -- before anything starts: OK splits anyway, Cancel stops here
    local answer = reaper.ShowMessageBox("The stems of these items will not play exactly like "
      .. "the original; this will not follow them:\n\n" .. table.concat(warnings, "\n")
      .. "\n\nSplit anyway?", "daw-bridge", 1)
    if answer ~= 1 then return end
  end
  local out_dir = settings.out_dir ~= "" and settings.out_dir or reaper.GetProjectPathEx(entries[1].project)
  local folder = data_folder() .. "jobs" .. separator()
    .. os.date("%Y%m%d-%H%M%S") .. "-" .. math.random(100000, 999999) .. separator()
  reaper.RecursiveCreateDirectory(folder, 0)
  local request = {
    address = settings.address,
    model = options.model or settings.model,
    two_stems = options.two_stems or "",
    preset = options.preset or "",
    out_dir = out_dir,
    autostart = settings.autostart,
    midi = settings.midi,
    keep = settings.keep,
    drum_kit = settings.drum_kit,
    mode = options.mode or "split",
  }
  local ok, err = pcall(write_lines, folder .. "request.txt", request_lines(request, entries))
  if not ok then
    message("daw-bridge could not write its request in " .. folder .. ": " .. tostring(err))
    return
  end
  local command = {}
  for index = 1, 64 do
    local argument = config["arg." .. index]
    if not argument then break end
    command[#command + 1] = argument
  end
  for _, argument in ipairs({ "reaper", "run", folder .. "request.txt" }) do
    command[#command + 1] = argument
  end
  local quoted = {}
  for index, argument in ipairs(command) do
    local good, text = pcall(M.quote, argument)
    if not good then message(text) return end
    quoted[index] = text
  end
  local windows = reaper.GetOS():find("Win") ~= nil
  -- The installed command and "reaper" (without "run <request>"): `reaper cancel` reuses it.
  local prefix = table.concat(quoted, " ", 1, #quoted - 3) .. " " .. quoted[#quoted - 2]
  if not start(table.concat(quoted, " "), windows) then
    message("daw-bridge could not start Python:\n" .. table.concat(command, " ")
      .. "\n\nHow to fix: run `daw-bridge install-reaper` again in a terminal, or check the "
      .. "Python path (arg.1) in " .. data_folder() .. "daw-bridge.conf")
    return
  end
  M.job = {
    folder = folder, entries = entries, skipped = skipped, settings = settings,
    project = entries[1].project, mode = request.mode,
    started = reaper.time_precise(), window = true, prefix = prefix, windows = windows,
  }
  gfx.init("daw-bridge", WIDTH, 24 + ROW * (#entries + 2))
  reaper.defer(poll)
end

---------------------------------------------------------------------------------------
-- Presets and settings

-- Preset names are the .toml file names in the folders the installer recorded.
function M.preset_names(config)
  local names, seen = {}, {}
  for folder in (config.presets or ""):gmatch("[^;]+") do
    local index = 0
    while true do
      local file = reaper.EnumerateFiles(folder, index)
      if not file or file == "" then break end
      local name = file:match("^(.+)%.toml$")
      if name and not seen[name] then
        seen[name] = true
        names[#names + 1] = name
      end
      index = index + 1
    end
  end
  table.sort(names)
  return names
end

function M.choose_preset()
  local config = M.config()
  if not config then return nil end
  local names = M.preset_names(config)
  if #names == 0 then
    message("No daw-bridge presets were found.\n\nHow to fix: run `daw-bridge install-reaper` "
      .. "again; `daw-bridge presets list` shows where presets live.")
    return nil
  end
  gfx.init("daw-bridge: choose a preset", 1, 1)
  gfx.x, gfx.y = gfx.mouse_x, gfx.mouse_y
  local choice = gfx.showmenu(table.concat(names, "|"))
  gfx.quit()
  if not choice or choice <= 0 then return nil end
  return names[choice]
end

-- "Split with preset" separates the stem set chosen in Settings.
function M.stem_set_options(options)
  local set = M.settings().stem_set
  if set == "2" then options.two_stems = "vocals" end
  if set == "6" then options.model = "htdemucs_6s" end
  return options
end

-- GetUserInputs splits its captions at commas: no caption may contain one. The models
-- are not typed here: Settings picks them from Python's lists (see M.edit_settings).
local SETTING_FIELDS = {
  { "address", "Server address" },
  { "out_dir", "Stem folder (empty: project media)" },
  { "stem_set", "Stems with presets: 4 or 2 or 6" },
  { "autostart", "Start server automatically: 1 or 0" },
  { "colors", "Colour stem tracks: 1 or 0" },
  { "mute_original", "Mute the original items: 1 or 0" },
  { "midi", "MIDI for (e.g. drums bass vocals)" },
  { "keep", "Stems to keep (empty: all)" },
}
-- Python starts, imports the catalogue and writes the lists in about a second.
local CHOICES_TIMEOUT_MS = 60000
local PICKED = { { "model", "Model", "server default" }, { "drum_kit", "Drum-kit model", "off" } }

local function trim(text)
  return (text:gsub("^%s+", ""):gsub("%s+$", ""))
end

function M.edit_text_settings()
  local settings = M.settings()
  local captions, values = {}, {}
  for index, field in ipairs(SETTING_FIELDS) do
    captions[index] = field[2]
    values[index] = settings[field[1]]
  end
  local ok, answer = reaper.GetUserInputs("daw-bridge settings", #SETTING_FIELDS,
    table.concat(captions, ",") .. ",separator=|,extrawidth=240", table.concat(values, "|"))
  if not ok then return false end
  local index = 0
  for value in (answer .. "|"):gmatch("([^|]*)|") do
    index = index + 1
    local field = SETTING_FIELDS[index]
    if field then M.save_setting(field[1], trim(value)) end
  end
  return true
end

local function popup(title, lines)
  gfx.init(title, 1, 1)
  gfx.x, gfx.y = gfx.mouse_x, gfx.mouse_y
  local choice = gfx.showmenu(table.concat(lines, "|"))
  gfx.quit()
  return math.floor(tonumber(choice) or 0)
end

-- The pick lists, written by `daw-bridge reaper choices` (models, ensembles, drum-kit
-- models with descriptions and licences): no model name lives in this file.
function M.load_choices(config)
  local path = data_folder() .. "choices.txt"
  os.remove(path)
  local command = {}
  for index = 1, 64 do
    if not config["arg." .. index] then break end
    command[#command + 1] = config["arg." .. index]
  end
  for _, argument in ipairs({ "reaper", "choices", path }) do command[#command + 1] = argument end
  for index, argument in ipairs(command) do
    local good, text = pcall(M.quote, argument)
    if not good then message(text) return nil end
    command[index] = text
  end
  local output = reaper.ExecProcess(table.concat(command, " "), CHOICES_TIMEOUT_MS)
  local choices = M.read_keyvalue(path)
  if not choices then
    message("daw-bridge could not list its models.\n\nHow to fix: run `daw-bridge install-reaper` "
      .. "again in a terminal.\n\n" .. tostring(output or ""))
  end
  return choices
end

-- One pick list: the current value ticked; the last line types a name, a checkpoint path
-- or an inline ensemble instead. Returns whether a value was saved.
function M.pick(key, choices, current)
  local names, lines = {}, {}
  for index = 1, tonumber(choices[key .. ".count"]) or 0 do
    names[index] = choices[key .. "." .. index .. ".name"] or ""
    lines[index] = (names[index] == current and "!" or "") .. choices[key .. "." .. index .. ".label"]
  end
  lines[#lines + 1] = "Type a name or a checkpoint path..."
  local choice = popup("daw-bridge: " .. key, lines)
  if choice < 1 or choice > #lines then return false end
  if choice <= #names then
    M.save_setting(key, names[choice])
    return true
  end
  local ok, typed = reaper.GetUserInputs("daw-bridge " .. key, 1,
    "Name or checkpoint path,separator=|,extrawidth=300", current)
  if not ok then return false end
  M.save_setting(key, trim(typed))
  return true
end

-- A menu: each model setting opens its pick list; the rest are typed in one dialog.
function M.edit_settings()
  local settings, lines = M.settings(), {}
  for index, picked in ipairs(PICKED) do
    local value = settings[picked[1]] ~= "" and settings[picked[1]] or picked[3]
    lines[index] = picked[2] .. ": " .. value:gsub("|", "/") .. "..."
  end
  lines[#lines + 1] = "Other settings..."
  local choice = popup("daw-bridge settings", lines)
  if choice == #lines then return M.edit_text_settings() end
  local picked = PICKED[choice]
  if not picked then return false end
  local config = M.config()
  local choices = config and M.load_choices(config)
  if not choices then return false end
  return M.pick(picked[1], choices, settings[picked[1]])
end

return M
